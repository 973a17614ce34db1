"""Candidate boxes for the proposal scenario (R@1, R@10, oracle R@100): a real method, never the truth.

- `selective_search(image, count, seed)`: OpenCV's selective search (opencv-contrib ximgproc, "fast"
  mode: HSV and Lab, graph segmentations at k = 150, 300, 450, the paper's colour/fill/texture/size
  strategies), its first `count` boxes as inclusive integer rows x1 y1 x2 y2. OpenCV ranks regions by
  hierarchy level times C `rand()`, so the order depends on the process's rand() state; seeding it per
  image (`srand`) makes the boxes a pure function of (image, seed), whatever ran before.
- `proposals_for_images(raw_root, tuples, count, seed, repo_root)`: per image, the proposal files of the
  raw ReferIt layout (proposals/<image_id>.txt) when it has a proposals folder, else selective search
  computed on the image itself; returns the boxes and the method's name, read from the layout's record
  (`annotations/referit_proposals.json`, written with computed proposals) or `edgebox` for the released
  files, which carry no record (Hu et al.'s top-100 EdgeBox). An image with neither a file nor pixels gets
  no candidates (counted by the metrics in n_no_candidates / no_proposals).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from refexp.data import referit
from refexp.data.skips import DataError

log = logging.getLogger(__name__)

EDGEBOX = "edgebox"
SELECTIVE_SEARCH = "selective_search_fast"
NO_PROPOSALS = "none (no proposal files and no images)"
METHOD_FILE = "referit_proposals.json"
DEFAULT_COUNT = 100
_LIBC = None


def image_seed(image_id: str, seed: int) -> int:
    """A 32-bit seed per (image, run seed), independent of the order images are processed in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{image_id}".encode()).digest()[:4], "little")


def _srand(seed: int) -> None:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None)  # the C library OpenCV's rand() comes from
    _LIBC.srand(ctypes.c_uint(seed))


def selective_search(image_rgb: np.ndarray, count: int = DEFAULT_COUNT, seed: int = 0) -> np.ndarray:
    """image_rgb uint8 (H, W, 3) -> (<= count, 4) int64 inclusive boxes in selective search's rank order."""
    import cv2

    image = np.ascontiguousarray(np.asarray(image_rgb, dtype=np.uint8)[:, :, ::-1])  # OpenCV wants BGR
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {np.asarray(image_rgb).shape}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(image)
    search.switchToSelectiveSearchFast()
    _srand(seed)
    rects = search.process()[:count].astype(np.int64)  # (K, 4) x, y, w, h
    if len(rects) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    return np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2] - 1, rects[:, 1] + rects[:, 3] - 1], axis=1)


def method_record(count: int) -> dict:
    """What a layout's computed proposal files were made with (written beside them)."""
    import cv2

    return {"method": SELECTIVE_SEARCH, "per_image": count, "library": f"opencv-contrib {cv2.__version__}",
            "mode": "switchToSelectiveSearchFast", "seeded": "srand(sha256(seed:image_id)) per image"}


def layout_method(layout: referit.ReferItLayout) -> str:
    """The method of the layout's proposal files: its record, else the released EdgeBox files."""
    path = layout.find(METHOD_FILE)
    if path is None:
        return EDGEBOX
    try:
        method = json.loads(path.read_text())["method"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"unreadable proposal method record ({err})") from None
    if not isinstance(method, str) or not method:
        raise DataError(path, f"'method' must be a non-empty string, got {method!r}")
    return method


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read image ({err})") from None


def proposals_for_images(raw_root: Path, tuples: pd.DataFrame, count: int, seed: int,
                         repo_root: Path = Path(".")) -> tuple[dict[str, np.ndarray], str]:
    """image_id -> (<= count, 4) float64 inclusive boxes, and the method's name."""
    raw_root = Path(raw_root)
    layout = referit.ReferItLayout.discover(raw_root) if raw_root.is_dir() else None
    images = tuples.drop_duplicates("image_id")
    out: dict[str, np.ndarray] = {}
    if layout is not None and layout.proposal_dirs:
        for image_id in images["image_id"].astype(str):
            try:
                path = layout.proposals_path(image_id)
            except DataError:
                log.warning("no proposals file for image %s: it has no candidates", image_id)
                out[image_id] = np.zeros((0, 4))
                continue
            out[image_id] = referit.load_proposals(path)[:count].astype(np.float64)
        return out, layout_method(layout)
    computed = 0
    for row in images.itertuples(index=False):
        image_id = str(row.image_id)
        if not isinstance(row.image_path, str):  # an annotation-only copy: nothing to search
            out[image_id] = np.zeros((0, 4))
            continue
        out[image_id] = selective_search(_read_rgb(Path(repo_root) / row.image_path), count,
                                         image_seed(image_id, seed)).astype(np.float64)
        computed += 1
    return out, SELECTIVE_SEARCH if computed else NO_PROPOSALS
