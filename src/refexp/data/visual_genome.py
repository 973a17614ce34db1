"""Visual Genome loaders (v1.2 and v1.0 field names), streaming.

The real region_descriptions.json is ~700 MB and region_graphs.json larger, so the
files are parsed incrementally with ijson (yajl2_c backend): one region dict at a
time goes into column lists, never the raw text and a parsed copy together.

Layouts read (what the official zips contain):
- region_descriptions.json: [{"regions": [{region_id, image_id, phrase, x, y, width, height}], "id"?}]
  v1.0 names a region's fields {id, image, phrase, x, y, width, height} (image may be an
  int or an {"id": ...} dict).
- image_data.json: [{image_id | id, url, width, height, coco_id, flickr_id}].
- region_graphs.json (optional): [{"regions": [{region_id, objects: [...], relationships: [...]}]}].

A truncated or malformed file raises DataError naming the file and the last region
read; a record lacking a field or with a non-numeric box is counted in `skips`
under "malformed_region" / "malformed_image".
"""
from __future__ import annotations

import logging
from array import array
from pathlib import Path
from typing import Any, Iterator

import ijson
import numpy as np
import pandas as pd

from refexp.data.skips import DataError, SkipCounter

log = logging.getLogger(__name__)

REGION_COLUMNS = ["image_id", "region_id", "phrase", "x", "y", "width", "height"]
IMAGE_COLUMNS = ["image_id", "width", "height", "url", "coco_id", "flickr_id"]


def _id(value: Any) -> int:
    if isinstance(value, dict):  # v1.0 sometimes nests the image
        value = value.get("image_id", value.get("id"))
    if isinstance(value, bool) or value is None:
        raise ValueError(f"bad id {value!r}")
    return int(value)


def _stream(path: Path, prefix: str, what: str) -> Iterator[dict]:
    """Yield the objects at `prefix`; turn parse errors into DataError naming the last good record."""
    last: Any = None
    try:
        with open(path, "rb") as f:
            for obj in ijson.items(f, prefix, use_float=True):
                yield obj
                last = obj.get("region_id", obj.get("id", obj.get("image_id"))) if isinstance(obj, dict) else None
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError) as e:
        where = f"after {what} {last}" if last is not None else f"before the first {what}"
        raise DataError(path, f"truncated or malformed JSON {where}: {e}", record=last) from e


def iter_regions(path: str | Path, skips: SkipCounter | None = None) -> Iterator[tuple]:
    """(image_id, region_id, phrase, x, y, width, height) per region, streamed."""
    path = Path(path)
    for r in _stream(path, "item.regions.item", "region"):
        rid = r.get("region_id", r.get("id"))
        try:
            image = r["image_id"] if "image_id" in r else r["image"]
            phrase = r.get("phrase")
            row = (_id(image), _id(rid), "" if phrase is None else str(phrase),
                   float(r["x"]), float(r["y"]), float(r["width"]), float(r["height"]))
        except (KeyError, TypeError, ValueError):
            if skips is None:
                raise DataError(path, "region lacks a field or has a non-numeric box", record=rid) from None
            skips.add("malformed_region", path, rid)
            continue
        yield row


def load_regions(path: str | Path, skips: SkipCounter | None = None) -> pd.DataFrame:
    """All regions of region_descriptions.json as a frame (columns REGION_COLUMNS)."""
    # Typed arrays for the numbers (8 bytes a value, not a Python object each): full VG is 5.4M rows.
    cols: list = [array("q"), array("q"), []] + [array("d") for _ in REGION_COLUMNS[3:]]
    for row in iter_regions(path, skips):
        for c, v in zip(cols, row):
            c.append(v)
    df = pd.DataFrame({
        "image_id": np.frombuffer(cols[0], np.int64).copy(), "region_id": np.frombuffer(cols[1], np.int64).copy(),
        "phrase": pd.Series(cols[2], dtype=object),
        **{name: np.frombuffer(c, np.float64).copy() for name, c in zip(REGION_COLUMNS[3:], cols[3:])},
    })
    log.info("read %d regions of %d images from %s", len(df), df["image_id"].nunique(), path)
    return df


def load_images(path: str | Path, skips: SkipCounter | None = None) -> pd.DataFrame:
    """image_data.json as a frame (columns IMAGE_COLUMNS); v1.0's `id` becomes image_id."""
    path = Path(path)
    rows = []
    for im in _stream(path, "item", "image"):
        iid = im.get("image_id", im.get("id"))
        try:
            rows.append((_id(iid), int(im["width"]), int(im["height"]), im.get("url"),
                         im.get("coco_id"), im.get("flickr_id")))
        except (KeyError, TypeError, ValueError):
            if skips is None:
                raise DataError(path, "image lacks a field or has a non-numeric size", record=iid) from None
            skips.add("malformed_image", path, iid)
    df = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    df["image_id"] = df["image_id"].astype(np.int64)
    for c in ("coco_id", "flickr_id"):
        df[c] = pd.array(df[c], dtype="Int64")
    return df


def load_region_graph_counts(path: str | Path) -> pd.DataFrame:
    """Per region of region_graphs.json: how many objects and relationships its graph has."""
    path = Path(path)
    rows = []
    for r in _stream(path, "item.regions.item", "region"):
        rid = r.get("region_id", r.get("id"))
        if rid is None:
            continue
        rows.append((_id(rid), len(r.get("objects") or []), len(r.get("relationships") or [])))
    return pd.DataFrame(rows, columns=["region_id", "n_objects", "n_relationships"]).astype(np.int64)


def find_file(root: str | Path, name: str) -> Path | None:
    """`name` (or its `name_samples.json` sample form) under a raw VG root."""
    root = Path(root)
    for candidate in (root / name, root / f"{name}_samples.json"):
        if candidate.exists():
            return candidate
    return None
