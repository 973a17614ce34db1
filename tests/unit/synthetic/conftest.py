"""A tiny synthetic world, generated once per session, shared by the synthetic tests."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from refexp.data.synthetic import generate, iter_images
from refexp.data.synthetic.writers import SyntheticImage

TINY_IMAGES = 12
TINY_SEED = 3


@dataclass
class World:
    root: Path
    counts: dict
    images: list[SyntheticImage]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("synthetic_world")
    counts = generate(root, TINY_IMAGES, TINY_SEED)
    return World(root, counts, list(iter_images(TINY_IMAGES, TINY_SEED)))


@pytest.fixture(scope="session")
def default_images() -> list[SyntheticImage]:
    """A larger in-memory world (default parameters) for statistics; nothing is written."""
    return list(iter_images(150, 0))
