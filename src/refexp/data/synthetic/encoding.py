"""Byte-deterministic encoders for the files the synthetic world writes.

Same input -> same bytes, always: JPEG through PIL with fixed quality and no
metadata; MATLAB .mat through scipy with the 116-byte header text (which scipy
stamps with the creation time) replaced by a fixed one; JSON in a fixed key order;
proposals in numpy's savetxt float format; the refer API's refs pickles in protocol 2 with
one object per distinct string (pickle memoises by identity, so equal values give equal bytes
whichever process built them). Masks become COCO polygons (contourpy
iso-lines at 0.5, which rasterise back exactly through pycocotools) or uncompressed
COCO RLE (for masks with holes, which polygons cannot express).
"""
from __future__ import annotations

import io
import json
import pickle
from typing import Any

import contourpy
import numpy as np
import scipy.io
from PIL import Image
from scipy import ndimage

JPEG_QUALITY = 92
MAT_HEADER_BYTES = 116
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: refexp synthetic world"


def jpeg_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False,
                                           progressive=False, subsampling=0)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3): the pixels every reader of the written JPEG gets."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def referit_mask_mat(mask: np.ndarray) -> bytes:
    """text_objseg's ReferIt mask file: key `segimg_t`, uint8, region pixels 0, others 1."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"segimg_t": np.where(mask, 0, 1).astype(np.uint8)}, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:MAT_HEADER_BYTES] = MAT_HEADER_TEXT.ljust(MAT_HEADER_BYTES, b" ")
    return bytes(data)


def proposals_text(boxes: np.ndarray) -> bytes:
    """Rows `x1 y1 x2 y2` in the float format of the released EdgeBox proposal files."""
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(boxes, dtype=np.float64), fmt="%16.7e", delimiter="")
    return buf.getvalue().encode("ascii")


def referit_json(obj: Any) -> bytes:
    """JSON as text_objseg's save_json writes it (one item per line)."""
    return json.dumps(obj, separators=(",\n", ":\n")).encode("utf-8")


def compact_json(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def refs_pickle(obj: Any) -> bytes:
    """Pickle protocol 2 (Python 2 reads it, as the refer API's refs(*).p are) of builtin lists,
    dicts, strings and ints. Every string is replaced by one shared object per value first: the
    pickler memoises by object identity, so strings that arrived as separate objects (from worker
    processes) would otherwise be written again where shared ones are back-references."""
    strings: dict[str, str] = {}

    def canonical(o: Any) -> Any:
        if type(o) is str:
            return strings.setdefault(o, o)
        if type(o) is list:
            return [canonical(v) for v in o]
        if type(o) is dict:
            return {canonical(k): canonical(v) for k, v in o.items()}
        if type(o) is int:
            return o
        raise TypeError(f"refs pickles hold only lists, dicts, str and int, not {type(o).__name__}")

    return pickle.dumps(canonical(obj), protocol=2)


def _crop(mask: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The mask's bounding window padded by one pixel, and the window's (x, y) offset."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if not len(ys):
        return mask, 0, 0
    y0, x0 = max(0, ys[0] - 1), max(0, xs[0] - 1)
    return mask[y0:ys[-1] + 2, x0:xs[-1] + 2], int(x0), int(y0)


def has_holes(mask: np.ndarray) -> bool:
    window, _, _ = _crop(mask)
    return bool((ndimage.binary_fill_holes(window) & ~window).any())


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons [[x0, y0, x1, y1, ...], ...] tracing each connected piece of `mask`.

    Iso-lines at 0.5 of the zero-padded mask run along pixel edges (corners cut at
    45 degrees); shifting by -0.5 (undo the pad: -1; pixel j spans [j, j+1): +0.5) puts
    them in COCO's pixel convention, where pycocotools rasterises them back to the same
    pixels. Collinear points are dropped.
    """
    window, x0, y0 = _crop(mask)
    z = np.pad(window, 1).astype(np.float64)
    offset = np.array([x0 - 0.5, y0 - 0.5])
    polygons = []
    for line in contourpy.contour_generator(z=z).lines(0.5):
        pts = line[:-1] if len(line) > 1 and np.array_equal(line[0], line[-1]) else line
        if len(pts) >= 3:
            prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
            into, out = pts - prev, nxt - pts
            cross = into[:, 0] * out[:, 1] - into[:, 1] * out[:, 0]
            pts = pts[cross != 0]
        if len(pts) >= 3:
            polygons.append([round(float(v), 2) for v in (pts + offset).ravel()])
    return polygons


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths starting with background."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}
