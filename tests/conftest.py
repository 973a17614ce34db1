"""Shared fixtures. Tests that need ../shared/data use `shared_data`: they fail
when CI=true and it is missing, and skip otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from refexp.numerics import pin_cpu_numerics

# The stages' kernel path (stages/__init__.py does the same), before any test imports torch.
pin_cpu_numerics()

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


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


TINY_OVERRIDES = {
    # vg_images None: the VG layout holds the same 12 images (no VG-only scenes).
    "synthetic": {"n_images": 12, "image_width": 64, "image_height": 64, "vg_images": None},
    # The paper's 100-step warm-up would outlast the tests' few steps (refused at load); tests that cover it set it.
    "vision_text_only": {"lowres_training": {"warmup_steps": 1}},
}


def tiny_config(overrides: dict | None = None):
    """The repo's params.yaml with a tiny synthetic world and the given overrides, validated."""
    import yaml

    from refexp.config import parse_config

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = deep_merge(deep_merge(raw, TINY_OVERRIDES), overrides or {})
    return parse_config(raw, source="tiny params")


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run in an empty working directory (stages resolve paths relative to the cwd)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
