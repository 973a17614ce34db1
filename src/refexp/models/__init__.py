"""Model registry: a plain dict, registry key (the module name) -> builder.

Builders import their module on call, so importing refexp.models does nothing (no torchvision
import, no weights). `build_model(name, **kwargs)` is the one entry point for stages.
"""
from __future__ import annotations

from typing import Any, Callable


def _scrc(**kwargs: Any):
    from refexp.models.scrc import Scrc

    return Scrc(**kwargs)


def _attention_regression(**kwargs: Any):
    from refexp.models.attention_regression import AttentionRegression

    return AttentionRegression(**kwargs)


REGISTRY: dict[str, Callable[..., Any]] = {
    "scrc": _scrc,
    "attention_regression": _attention_regression,
}


def build_model(name: str, **kwargs: Any):
    try:
        builder = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}' (have {', '.join(sorted(REGISTRY))})") from None
    return builder(**kwargs)
