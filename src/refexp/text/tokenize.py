"""The one tokenizer every dataset goes through: lowercase words and digits.

Punctuation and symbols (',', '.', '™', '_') are dropped, so "Man's hat, left."
becomes ['man', 's', 'hat', 'left']. Letters outside ASCII are kept ('café').
"""
from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")  # \w without the underscore: letters and digits


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())
