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
[nonpositive_box_size], a box reaching more than a pixel beyond its image
[box_outside_image], an annotation without segmentation [annotation_without_mask],
a polygon pycocotools cannot rasterise or would misread (fewer than 3 points, an
odd number of coordinates, a non-number, a part that is not a list: a 4-number
part would silently become a box; a coordinate far outside the image, which
exhausts memory) [bad_polygon], an RLE (list or compressed string) whose size
is not the image's or whose runs do not cover it [bad_rle], an empty caption
[empty_caption], an annotation whose category is unknown [unknown_category].
Skips count annotations (`skips.read`, units "instances" / "captions"), so rows +
skips = the annotations in the file.

DataError naming the file and the record: files that are not COCO JSON, an
image, annotation or category entry lacking a key or with a value of the wrong
type (an id that is a list, a size that is not a positive whole number, a bbox
that is not 4 finite numbers, a negative area, a file_name that leaves the image
folder), an id listed twice (pycocotools' index would silently keep the last;
1 and "1" count as the same id) and a category name listed twice.
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
from refexp.data.skips import DataError, SkipCounter, is_number, numbers, read_json
from refexp.text.tokenize import tokenize

log = logging.getLogger(__name__)

_IMAGE_SET_IN_NAME = re.compile(r"(train|val|test)(\d{4})")


def is_id(value) -> bool:
    return type(value) in (int, str)  # hashable scalars; not bool, float, list or dict


def _positive_whole(value) -> bool:
    return is_number(value) and value > 0 and float(value).is_integer()


def _check_entries(path: Path, data: dict, key: str, what: str, id_key: str, check) -> None:
    """Every entry of data[key] is a dict that passes `check` (None or a problem), ids unique."""
    first: dict = {}
    for i, entry in enumerate(data[key]):
        where = f"{key}[{i}]"
        problem = check(entry) if isinstance(entry, dict) else f"is a {type(entry).__name__}, not an object"
        if problem is not None:
            raise DataError(path, f"{what} entry {problem}", record=where)
        entry_id = entry[id_key]
        if str(entry_id) in first:  # 1 and "1" are one id once written out as the schema's string id
            raise DataError(path, f"{what} id {entry_id!r} listed twice ({key}[{first[str(entry_id)]}] and {where}); "
                            "one would silently replace the other", record=where)
        first[str(entry_id)] = i


def _image_problem(img: dict) -> str | None:
    if not {"id", "file_name", "width", "height"} <= img.keys():
        return "needs id, file_name, width, height"
    if not is_id(img["id"]):
        return f"has id {img['id']!r}, expected an integer or string"
    name = img["file_name"]
    if not (isinstance(name, str) and name):
        return f"has file_name {name!r}, expected a non-empty string"
    if name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name):  # would point outside the image folder
        return f"has file_name {name!r}, expected a path inside the image folder"
    if not (_positive_whole(img["width"]) and _positive_whole(img["height"])):
        return f"has size {img['width']!r}x{img['height']!r}, expected positive whole pixels"
    return None


def _category_problem(cat: dict) -> str | None:
    if not ({"id", "name"} <= cat.keys() and is_id(cat["id"]) and isinstance(cat["name"], str)):
        return "needs an integer id and a string name"
    return None


def read_coco(path: Path, required: tuple[str, ...]) -> COCO:
    """A pycocotools COCO index of `path`, after checking the keys it indexes by."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, f"expected a COCO JSON object, got {type(data).__name__}")
    missing = [k for k in required if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(path, f"not a COCO annotation file: no list {missing}")
    if "categories" in data and not isinstance(data["categories"], list):
        raise DataError(path, f"categories is a {type(data['categories']).__name__}, expected a list")
    _check_entries(path, data, "images", "image", "id", _image_problem)
    # pycocotools indexes by these keys; check them here so a bad entry is named, not a KeyError.
    needed = ("id", "image_id", "category_id") if "categories" in data else ("id", "image_id")

    def annotation_problem(ann: dict) -> str | None:
        if not set(needed) <= ann.keys():
            return f"needs {sorted(needed)}"
        bad = [k for k in needed if not is_id(ann[k])]
        return f"has {bad[0]} {ann[bad[0]]!r}, expected an integer or string" if bad else None

    _check_entries(path, data, "annotations", "annotation", "id", annotation_problem)
    if "categories" in data:
        _check_entries(path, data, "categories", "category", "id", _category_problem)
        names: dict[str, int] = {}
        for i, cat in enumerate(data["categories"]):  # the schema's category column holds the name
            if cat["name"] in names:
                raise DataError(path, f"category name {cat['name']!r} listed twice (categories[{names[cat['name']]}] "
                                f"and categories[{i}]); their rows would be indistinguishable",
                                record=f"categories[{i}]")
            names[cat["name"]] = i
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def image_set(path: Path, images: list[dict]) -> str | None:
    """The image folder ("val2014") from the images' coco_url, else from the file name."""
    for img in images[:1]:
        url = img.get("coco_url")
        url = url if isinstance(url, str) else ""
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


def segmentation_problem(segmentation, height: int, width: int) -> str | None:
    """The skip reason for a segmentation that pycocotools would reject deep inside (a bare
    Exception) or misread silently, or None when it is usable. Types that are neither
    polygons nor RLE are left to segmentation_to_rle's ValueError."""
    if isinstance(segmentation, list):
        for part in segmentation:
            # pycocotools reads a 4-number part as a box, drops an odd last coordinate,
            # and raises "input type is not supported" for fewer than 4.
            if not (isinstance(part, list) and len(part) >= 6 and len(part) % 2 == 0
                    and all(is_number(v) for v in part)):
                return "bad_polygon"
            # Far outside the image pycocotools rasterises the whole outline: 1e30 exhausts memory.
            if not (all(-width <= v <= 2 * width for v in part[0::2])
                    and all(-height <= v <= 2 * height for v in part[1::2])):
                return "bad_polygon"
        return None
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (list, str, bytes)):
        if segmentation.get("size") != [height, width]:
            return "bad_rle"  # a mask of another size would not line up with the image
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not (all(type(c) is int and c >= 0 for c in counts) and sum(counts) == height * width):
                return "bad_rle"
        elif not counts:
            return "bad_rle"
        elif not _rle_covers(counts, height * width):  # pycocotools would decode garbage or fail later
            return "bad_rle"
    return None


def _rle_covers(counts: str | bytes, n_pixels: int) -> bool:
    """The runs of a compressed RLE string add up to the image's pixel count (COCO's LEB128-like code)."""
    data = counts.encode("ascii") if isinstance(counts, str) else counts
    total, i, m = 0, 0, 0
    runs: list[int] = []
    while i < len(data):
        x, k, more = 0, 0, True
        while more:
            if i >= len(data):
                return False
            c = data[i] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if m > 2:
            x += runs[m - 2]
        if x < 0:
            return False
        runs.append(x)
        total += x
        m += 1
    return total == n_pixels


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


def instance_box(path: Path, ann: dict, img: dict) -> tuple[float, float, float, float] | str:
    """(x, y, w, h) of a usable box, or the skip reason; a box that is not 4 finite numbers is a DataError."""
    bbox = ann.get("bbox")
    if not numbers(bbox, 4):
        raise DataError(path, f"expected bbox [x, y, w, h] of 4 finite numbers, got {bbox!r}",
                        record=f"annotation {ann['id']}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return "nonpositive_box_size"
    # Continuous coordinates: x + w == width is the image's edge; a pixel of slack for rounding.
    if x < -1 or y < -1 or x + w > img["width"] + 1 or y + h > img["height"] + 1:
        return "box_outside_image"
    return x, y, w, h


def annotation_mask(path: Path, ann: dict, img: dict) -> str:
    """The compressed RLE counts of an annotation whose segmentation passed segmentation_problem."""
    try:
        return rle_counts(segmentation_to_rle(ann["segmentation"], img["height"], img["width"]))
    except Exception as e:  # pycocotools raises bare Exception; ValueError/TypeError/KeyError for bad dicts
        raise DataError(path, f"bad segmentation: {e}", record=f"annotation {ann['id']}") from e


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
    skips.read("instances", len(coco.dataset["annotations"]))
    for ann in coco.dataset["annotations"]:
        img = coco.imgs.get(ann["image_id"])
        if img is None:
            skips.add("annotation_without_image", path, ann["id"])
            continue
        cat = coco.cats.get(ann.get("category_id"))
        if cat is None:
            skips.add("unknown_category", path, ann["id"])
            continue
        box = instance_box(path, ann, img)
        if isinstance(box, str):
            skips.add(box, path, ann["id"])
            continue
        x, y, w, h = box
        iscrowd, area = ann.get("iscrowd", 0), ann.get("area")
        area = np.nan if area is None else area
        if (type(iscrowd) not in (int, float) or iscrowd not in (0, 1) or type(area) not in (int, float)
                or area < 0):  # NaN (area absent) compares False and is kept
            raise DataError(path, f"expected iscrowd 0/1 and a non-negative numeric area, got {iscrowd!r}, {area!r}",
                            record=f"annotation {ann['id']}")
        if not ann.get("segmentation"):
            skips.add("annotation_without_mask", path, ann["id"])
            continue
        problem = segmentation_problem(ann["segmentation"], img["height"], img["width"])
        if problem is not None:
            skips.add(problem, path, f"annotation {ann['id']}")
            continue
        mask = annotation_mask(path, ann, img)
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
        cols["mask_rle"].append(mask)
        cols["iscrowd"].append(int(iscrowd))
        cols["area"].append(float(area))
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
    skips.read("captions", len(coco.dataset["annotations"]))
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
