"""Candidate boxes for the proposal scenario (R@1, R@10, oracle R@100).

`proposals_for_images` returns, per image, the official EdgeBox top-N boxes from the raw ReferIt
layout (proposals/<image_id>.txt, read by refexp.data.referit.load_proposals) when that layout
has a proposals folder; otherwise the documented fallback `jittered_proposals`: each annotated
box jittered by up to +-12% of its size 3 times plus uniform random boxes up to N, seeded per
image, so some proposals hit a region at IoU >= 0.5 without being exact. The source used is
returned so reports can name it. An image without any proposal is returned with an empty array
(the metrics count it in n_no_candidates).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from refexp.data import referit

log = logging.getLogger(__name__)

EDGEBOX = "edgebox"
JITTERED = "jittered_annotated_boxes"


def _image_seed(image_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{image_id}".encode()).digest()[:8], "little")


def jittered_proposals(boxes: np.ndarray, width: int, height: int, count: int, seed: int) -> np.ndarray:
    """(count, 4) inclusive integer boxes: 3 jittered copies of each annotated box, then random boxes."""
    rng = np.random.default_rng(seed)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    copies = np.repeat(boxes, 3, axis=0)[:count]
    size = np.stack([copies[:, 2] - copies[:, 0] + 1, copies[:, 3] - copies[:, 1] + 1] * 2, axis=1)
    jittered = copies + rng.uniform(-0.12, 0.12, size=copies.shape) * size
    n_random = count - len(jittered)
    x = np.sort(rng.uniform(0, width - 1, size=(n_random, 2)), axis=1)
    y = np.sort(rng.uniform(0, height - 1, size=(n_random, 2)), axis=1)
    out = np.rint(np.concatenate([jittered, np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)]))
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height - 1)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out


def proposals_for_images(raw_root: Path, tuples: pd.DataFrame, count: int, seed: int) -> tuple[dict[str, np.ndarray], str]:
    """image_id -> (<= count, 4) inclusive boxes, and the source name (EDGEBOX or JITTERED)."""
    layout = referit.ReferItLayout.discover(raw_root) if Path(raw_root).is_dir() else None
    images = tuples.drop_duplicates("image_id")
    out: dict[str, np.ndarray] = {}
    if layout is not None and layout.proposal_dirs:
        for image_id in images["image_id"]:
            try:
                path = layout.proposals_path(str(image_id))
            except referit.DataError:
                log.warning("no proposals file for image %s: it has no candidates", image_id)
                out[str(image_id)] = np.zeros((0, 4))
                continue
            out[str(image_id)] = referit.load_proposals(path)[:count].astype(np.float64)
        return out, EDGEBOX
    for image_id, group in tuples.groupby("image_id", sort=True):
        regions = group.drop_duplicates("region_id")
        first = regions.iloc[0]
        out[str(image_id)] = jittered_proposals(regions[["x1", "y1", "x2", "y2"]].to_numpy(), int(first["image_width"]),
                                                int(first["image_height"]), count, _image_seed(str(image_id), seed))
    return out, JITTERED
