"""The refer API format (lichengunc/refer): refclef, refcoco, refcoco+, refcocog.

Layout: <root>/<dataset>/refs(<split_by>).p and <root>/<dataset>/instances.json
(root may also be the dataset folder itself). refs(*).p is a Python-2 pickle of
a list of dicts {ref_id, ann_id, image_id, split, category_id, file_name,
sent_ids, sentences: [{tokens, raw, sent, sent_id}]}; instances.json is COCO
format (images, annotations with bbox [x, y, w, h] and segmentation, categories).

The pickle comes from outside, so it is read with `RefsUnpickler`, which admits
no global at all: refs hold only lists, dicts, strings and numbers, and any
pickle that would import or call something (os.system, builtins.eval, ...)
fails with UnsafePickleError before anything runs. Python-2 `str` values arrive
as bytes and are decoded as UTF-8 (latin-1 if that fails).

load() gives one row per (ref, sentence) in the common schema; extra columns
ref_id and sent_id. Counted skips: a ref whose annotation is not in
instances.json [ref_without_annotation], an annotation whose image is not
listed [annotation_without_image], a box with w <= 0 or h <= 0
[nonpositive_box_size], an empty sentence [empty_expression]. An annotation
without segmentation keeps its row with mask_rle <NA>.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pandas as pd

from refexp.data.coco import read_coco, rle_counts, segmentation_to_rle
from refexp.data.schema import to_frame
from refexp.data.skips import DataError, SkipCounter
from refexp.text.tokenize import tokenize

log = logging.getLogger(__name__)

DATASETS = ("refclef", "refcoco", "refcoco+", "refcocog")
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class UnsafePickleError(pickle.UnpicklingError, DataError):
    """A refs pickle that asks to import or call something; nothing was executed."""


class RefsUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global: builtin containers and scalars only."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused global {module}.{name}: refs pickles hold only plain data")


def _decode_py2(obj: Any) -> Any:
    """Python-2 str (read as bytes) -> str, through nested lists, tuples and dicts."""
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj.decode("latin-1")
    if isinstance(obj, dict):
        return {_decode_py2(k): _decode_py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_py2(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_decode_py2(v) for v in obj)
    return obj


def read_refs(path: str | Path) -> list[dict]:
    """The refs list from a refs(<split_by>).p file, read without running any code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = RefsUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except pickle.UnpicklingError as e:
        if "refused global" in str(e):
            raise UnsafePickleError(path, str(e)) from None
        raise DataError(path, f"corrupt pickle: {e}") from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DataError(path, f"corrupt or truncated pickle: {e!r}") from e
    refs = _decode_py2(data)
    if not isinstance(refs, list):
        raise DataError(path, f"expected a list of refs, got {type(refs).__name__}")
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise DataError(path, f"ref is a {type(ref).__name__}, not a dict", record=f"refs[{i}]")
        missing = [k for k in REF_KEYS if k not in ref]
        if missing:
            raise DataError(path, f"ref lacks keys {missing}", record=f"refs[{i}]")
        if not isinstance(ref["sentences"], list):
            raise DataError(path, "sentences is not a list", record=f"ref_id {ref['ref_id']}")
    return refs


def refs_file(split_by: str) -> str:
    return f"refs({split_by}).p"


def dataset_dir(root: str | Path, dataset: str, split_by: str) -> Path:
    root = Path(root)
    for candidate in (root / dataset, root):
        if (candidate / refs_file(split_by)).is_file():
            return candidate
    raise DataError(root, f"no {dataset}/{refs_file(split_by)} under {root}")


def load(root: str | Path, dataset: str, split_by: str, split: str | None = None,
         skips: SkipCounter | None = None, image_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per (ref, sentence) of `split` (all splits if None), common schema.

    image_dir, if given, is where the images' file_names live (COCO train2014 or
    saiaprtc12); image_path is set for the files that exist there.
    """
    skips = SkipCounter() if skips is None else skips
    folder = dataset_dir(root, dataset, split_by)
    refs_path = folder / refs_file(split_by)
    instances_path = folder / "instances.json"
    refs = read_refs(refs_path)
    coco = read_coco(instances_path, ("images", "annotations", "categories"))
    available = sorted({str(r["split"]) for r in refs})
    if split is not None and split not in available:
        raise DataError(refs_path, f"no refs in split {split!r}; splits present: {available}")

    cols: dict[str, list] = {c: [] for c in (
        "image_id", "image_path", "image_width", "image_height", "region_id", "x1", "y1", "x2", "y2",
        "mask_rle", "expression", "tokens", "category", "split", "ref_id", "sent_id")}
    for ref in refs:
        if split is not None and ref["split"] != split:
            continue
        sentences = ref["sentences"]
        ann = coco.anns.get(ref["ann_id"])
        if ann is None:
            skips.add("ref_without_annotation", refs_path, f"ref_id {ref['ref_id']}", len(sentences))
            continue
        img = coco.imgs.get(ann["image_id"])
        if img is None:
            skips.add("annotation_without_image", instances_path, f"annotation {ann['id']}", len(sentences))
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DataError(instances_path, f"expected bbox [x, y, w, h], got {bbox!r}", record=f"annotation {ann['id']}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            skips.add("nonpositive_box_size", instances_path, f"annotation {ann['id']}", len(sentences))
            continue
        mask = None
        if ann.get("segmentation"):
            try:
                mask = rle_counts(segmentation_to_rle(ann["segmentation"], img["height"], img["width"]))
            except (ValueError, TypeError, KeyError) as e:
                raise DataError(instances_path, f"bad segmentation: {e}", record=f"annotation {ann['id']}") from e
        cat = coco.cats.get(ref.get("category_id", ann.get("category_id")))
        image_path = None
        if image_dir is not None and (Path(image_dir) / img["file_name"]).is_file():
            image_path = str(Path(image_dir) / img["file_name"])
        for sentence in sentences:
            text = (sentence.get("raw") or sentence.get("sent") or "") if isinstance(sentence, dict) else None
            if not isinstance(text, str):
                raise DataError(refs_path, f"sentence is not a dict with raw/sent: {sentence!r}",
                                record=f"ref_id {ref['ref_id']}")
            if not text.strip():
                skips.add("empty_expression", refs_path, f"ref_id {ref['ref_id']} sent_id {sentence.get('sent_id')}")
                continue
            cols["image_id"].append(str(img["id"]))
            cols["image_path"].append(image_path)
            cols["image_width"].append(img["width"])
            cols["image_height"].append(img["height"])
            cols["region_id"].append(str(ann["id"]))
            cols["x1"].append(x)
            cols["y1"].append(y)
            cols["x2"].append(x + w - 1)
            cols["y2"].append(y + h - 1)
            cols["mask_rle"].append(mask)
            cols["expression"].append(text)
            cols["tokens"].append(tokenize(text))
            cols["category"].append(cat["name"] if cat else None)
            cols["split"].append(str(ref["split"]))
            cols["ref_id"].append(ref["ref_id"])
            cols["sent_id"].append(sentence.get("sent_id"))
    log.info("%s (%s) %s: %d sentences (%d skipped)", dataset, split_by, split or "all splits",
             len(cols["image_id"]), skips.total)
    df = to_frame(pd.DataFrame(cols))
    return df.astype({"ref_id": "Int64", "sent_id": "Int64"})
