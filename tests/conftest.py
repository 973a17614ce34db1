"""Shared fixtures. Tests that need ../shared/data use `shared_data`: they fail
when CI=true and it is missing, and skip otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REFEXP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data; fail in CI when missing, skip elsewhere."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        msg = f"real data sample missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true requires ../shared/data)")
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
