"""Vocabulary built from the training split only, by frequency, with <unk>.

Ids: 0 <pad>, 1 <bos>, 2 <eos>, 3 <unk>, then words by descending count
(ties broken alphabetically, so the file is deterministic).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.words[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], min_count: int = 1) -> "Vocab":
        counts = Counter(t for tokens in token_lists for t in tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls(SPECIALS + tuple(kept))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    def encode(self, tokens: list[str]) -> list[int]:
        """Token ids; unknown words map to <unk> (an all-unknown expression stays scoreable)."""
        index = self._index  # type: ignore[attr-defined]
        return [index.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids]

    def save(self, path: str | Path) -> None:
        from refexp.artifacts import write_text

        write_text(path, "\n".join(self.words) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        return cls(tuple(Path(path).read_text().splitlines()))
