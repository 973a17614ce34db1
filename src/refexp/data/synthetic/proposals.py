"""Synthetic "EdgeBox-like" box proposals: jittered copies of every region's box plus random boxes.

Like the released top-100 EdgeBox files, most ground-truth regions are covered by some
proposal at IoU >= 0.5 but rarely exactly, and the rest are clutter.
"""
from __future__ import annotations

import numpy as np

from refexp.data.synthetic.scene import Scene

PROPOSALS_PER_IMAGE = 100
JITTERED_PER_REGION = 3


def edgebox_like_proposals(scene: Scene, rng: np.random.Generator, count: int = PROPOSALS_PER_IMAGE) -> np.ndarray:
    """(count, 4) integer-valued float boxes x1, y1, x2, y2 (0-based, inclusive), in random order."""
    w, h = scene.width, scene.height
    boxes = np.array([r.box for r in scene.regions], dtype=np.float64).reshape(-1, 4)
    copies = np.repeat(boxes, JITTERED_PER_REGION, axis=0)[:count]
    size = np.stack([copies[:, 2] - copies[:, 0] + 1, copies[:, 3] - copies[:, 1] + 1] * 2, axis=1)
    jittered = copies + rng.uniform(-0.12, 0.12, size=copies.shape) * size
    n_random = count - len(jittered)
    x = np.sort(rng.uniform(0, w - 1, size=(n_random, 2)), axis=1)
    y = np.sort(rng.uniform(0, h - 1, size=(n_random, 2)), axis=1)
    random = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    out = np.rint(np.concatenate([jittered, random]))
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out[rng.permutation(len(out))]
