"""COCO instances and captions JSON (2014/2017 release format), through pycocotools.

- load_instances: one row per annotation: image_id, file_name, image_path (the
  image's path relative to the dataset root, "<image set>/<file_name>", e.g.
  "val2014/COCO_val2014_000000391895.jpg"), image_width/height, region_id (the
  annotation id), x1, y1, x2, y2 (0-based inclusive: x2 = x + w - 1), category,
  category_id, mask_rle (COCO compressed RLE counts of the image-sized mask, from
  polygons, uncompressed or compressed RLE), iscrowd, area.
- load_captions: image_id, file_name, image_path, image_width/height, caption_id,
  caption, tokens.
- load_categories: category_id, name, supercategory.

Counted skips: an annotation or caption whose image is not in `images`
[annotation_without_image / caption_without_image] (the shared 2014 samples cut
the images and annotations lists independently), a box with w <= 0 or h <= 0
[nonpositive_box_size], an annotation without segmentation [annotation_without_mask],
an empty caption [empty_caption], an annotation whose category is unknown
[unknown_category]. Files that are not COCO JSON are DataError naming the file.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from refexp.data.schema import COLUMNS
from refexp.data.skips import DataError, SkipCounter, read_json
from refexp.text.tokenize import tokenize

log = logging.getLogger(__name__)

_IMAGE_SET_IN_NAME = re.compile(r"(train|val|test)(\d{4})")


def read_coco(path: Path, required: tuple[str, ...]) -> COCO:
    """A pycocotools COCO index of `path`, after checking the keys it indexes by."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, f"expected a COCO JSON object, got {type(data).__name__}")
    missing = [k for k in required if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(path, f"not a COCO annotation file: no list {missing}")
    for i, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and {"id", "file_name", "width", "height"} <= img.keys()):
            raise DataError(path, "image entry needs id, file_name, width, height", record=f"images[{i}]")
    # pycocotools indexes by these keys; check them here so a bad entry is named, not a KeyError.
    needed = {"id", "image_id", "category_id"} if "categories" in data else {"id", "image_id"}
    for i, ann in enumerate(data["annotations"]):
        if not (isinstance(ann, dict) and needed <= ann.keys()):
            raise DataError(path, f"annotation entry needs {sorted(needed)}", record=f"annotations[{i}]")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def image_set(path: Path, images: list[dict]) -> str | None:
    """The image folder ("val2014") from the images' coco_url, else from the file name."""
    for img in images[:1]:
        url = img.get("coco_url") or ""
        parts = url.rstrip("/").split("/")
        if len(parts) >= 2 and _IMAGE_SET_IN_NAME.fullmatch(parts[-2]):
            return parts[-2]
    m = _IMAGE_SET_IN_NAME.search(path.name)
    return m.group(0) if m else None


def _image_path(folder: str | None, file_name: str) -> str:
    return file_name if folder is None else f"{folder}/{file_name}"


def segmentation_to_rle(segmentation, height: int, width: int) -> dict:
    """Polygons, uncompressed RLE or compressed RLE -> one compressed RLE (as COCO.annToRLE)."""
    if isinstance(segmentation, list):  # polygons: one object may have several parts
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE (iscrowd)
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        return segmentation
    raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")


def rle_counts(rle: dict) -> str:
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask from a mask_rle string of the common schema."""
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


def encode_mask(mask: np.ndarray) -> str:
    """Boolean (H, W) mask -> the common schema's mask_rle string (COCO compressed RLE)."""
    return rle_counts(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def _typed(cols: dict[str, list]) -> pd.DataFrame:
    df = pd.DataFrame(cols)
    for col in df.columns:
        dtype = COLUMNS.get(col)
        if dtype is not None and dtype != "object":
            df[col] = df[col].astype(dtype)
    return df


def load_categories(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    coco = read_coco(path, ("images", "annotations", "categories"))
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    return pd.DataFrame({
        "category_id": pd.Series([c["id"] for c in cats], dtype="int64"),
        "name": pd.Series([c["name"] for c in cats], dtype="string"),
        "supercategory": pd.Series([c.get("supercategory") for c in cats], dtype="string"),
    })


def load_instances(path: str | Path, skips: SkipCounter | None = None,
                   image_dir: str | None = None) -> pd.DataFrame:
    """One row per annotation whose image is listed; masks as compressed RLE."""
    path = Path(path)
    skips = SkipCounter() if skips is None else skips
    coco = read_coco(path, ("images", "annotations", "categories"))
    folder = image_dir if image_dir is not None else image_set(path, coco.dataset["images"])
    cols: dict[str, list] = {c: [] for c in (
        "image_id", "file_name", "image_path", "image_width", "image_height", "region_id",
        "x1", "y1", "x2", "y2", "category", "category_id", "mask_rle", "iscrowd", "area")}
    for ann in coco.dataset["annotations"]:
        img = coco.imgs.get(ann["image_id"])
        if img is None:
            skips.add("annotation_without_image", path, ann["id"])
            continue
        cat = coco.cats.get(ann.get("category_id"))
        if cat is None:
            skips.add("unknown_category", path, ann["id"])
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DataError(path, f"expected bbox [x, y, w, h], got {bbox!r}", record=f"annotation {ann['id']}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            skips.add("nonpositive_box_size", path, ann["id"])
            continue
        if not ann.get("segmentation"):
            skips.add("annotation_without_mask", path, ann["id"])
            continue
        try:
            rle = segmentation_to_rle(ann["segmentation"], img["height"], img["width"])
        except (ValueError, TypeError, KeyError) as e:  # malformed polygon / RLE
            raise DataError(path, f"bad segmentation: {e}", record=f"annotation {ann['id']}") from e
        cols["image_id"].append(str(img["id"]))
        cols["file_name"].append(img["file_name"])
        cols["image_path"].append(_image_path(folder, img["file_name"]))
        cols["image_width"].append(img["width"])
        cols["image_height"].append(img["height"])
        cols["region_id"].append(str(ann["id"]))
        cols["x1"].append(x)
        cols["y1"].append(y)
        cols["x2"].append(x + w - 1)
        cols["y2"].append(y + h - 1)
        cols["category"].append(cat["name"])
        cols["category_id"].append(cat["id"])
        cols["mask_rle"].append(rle_counts(rle))
        cols["iscrowd"].append(int(ann.get("iscrowd", 0)))
        cols["area"].append(float(ann.get("area", np.nan)))
    log.info("COCO instances %s: %d annotations (%d skipped)", path.name, len(cols["image_id"]), skips.total)
    df = _typed(cols)
    return df.astype({"category_id": "int64", "iscrowd": "int64", "area": "float64"})


def load_captions(path: str | Path, skips: SkipCounter | None = None,
                  image_dir: str | None = None) -> pd.DataFrame:
    """One row per caption whose image is listed."""
    path = Path(path)
    skips = SkipCounter() if skips is None else skips
    coco = read_coco(path, ("images", "annotations"))
    folder = image_dir if image_dir is not None else image_set(path, coco.dataset["images"])
    cols: dict[str, list] = {c: [] for c in (
        "image_id", "file_name", "image_path", "image_width", "image_height", "caption_id", "caption", "tokens")}
    for ann in coco.dataset["annotations"]:
        img = coco.imgs.get(ann["image_id"])
        if img is None:
            skips.add("caption_without_image", path, ann["id"])
            continue
        caption = ann.get("caption")
        if not isinstance(caption, str):
            raise DataError(path, f"caption is not a string: {caption!r}", record=f"annotation {ann['id']}")
        if not caption.strip():
            skips.add("empty_caption", path, ann["id"])
            continue
        cols["image_id"].append(str(img["id"]))
        cols["file_name"].append(img["file_name"])
        cols["image_path"].append(_image_path(folder, img["file_name"]))
        cols["image_width"].append(img["width"])
        cols["image_height"].append(img["height"])
        cols["caption_id"].append(str(ann["id"]))
        cols["caption"].append(caption)
        cols["tokens"].append(tokenize(caption))
    log.info("COCO captions %s: %d captions (%d skipped)", path.name, len(cols["image_id"]), skips.total)
    df = _typed(cols)
    return df.astype({"caption_id": "string", "caption": "string"})
