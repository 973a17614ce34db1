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
ref_id and sent_id. Counted skips (unit "expressions": rows + skips = the
sentences of the refs read): a ref whose annotation is not in instances.json
[ref_without_annotation], an annotation whose image is not listed
[annotation_without_image], a box with w <= 0 or h <= 0 [nonpositive_box_size],
a box beyond its image [box_outside_image], an empty sentence
[empty_expression], a sentence whose text has no word at all once tokenized
("?!") [no_tokens], a sentence whose sent_id an earlier sentence already has
[duplicate_sent_id]; each skip's log line names the file and the ref (and
sent_id). Rows kept with a defect, counted in `defects`: an
annotation without segmentation [mask_missing] or with one pycocotools cannot
read [bad_polygon, bad_rle] keeps mask_rle <NA>; an unknown category
[unknown_category] keeps category <NA>; with image_dir, an image not there
[image_missing] keeps image_path <NA>. A ref id listed twice, or a ref field of
the wrong type, or a ref whose image_id is not its annotation's image, or a ref
in a split outside KNOWN_SPLITS (train, val, test, testA, testB, testC: those of
every released refs file; checked over all refs, whichever split is asked for),
is a DataError naming the file and the ref.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pandas as pd

from refexp.data.coco import annotation_mask, instance_box, is_id, read_coco, segmentation_problem
from refexp.data.schema import to_frame
from refexp.data.skips import DataError, SkipCounter
from refexp.text.tokenize import tokenize

log = logging.getLogger(__name__)

DATASETS = ("refclef", "refcoco", "refcoco+", "refcocog")
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")
# The splits of the released refs files: refcoco/refcoco+ unc train/val/testA/testB, refcoco google
# train/val/test, refcocog google train/val and umd train/val/test, refclef unc train/val/testA/testB/testC
# and berkeley train/val/test. Any other name would be a split no stage evaluates or trains on.
KNOWN_SPLITS = ("train", "val", "test", "testA", "testB", "testC")


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
    except RecursionError:  # a hostile pickle nested thousands deep
        raise DataError(path, "corrupt pickle: nested too deeply") from None
    try:
        refs = _decode_py2(data)
    except RecursionError:
        raise DataError(path, "corrupt pickle: nested too deeply") from None
    if not isinstance(refs, list):
        raise DataError(path, f"expected a list of refs, got {type(refs).__name__}")
    first: dict = {}
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise DataError(path, f"ref is a {type(ref).__name__}, not a dict", record=f"refs[{i}]")
        missing = [k for k in REF_KEYS if k not in ref]
        if missing:
            raise DataError(path, f"ref lacks keys {missing}", record=f"refs[{i}]")
        # ref_id goes into an Int64 column; ann_id and image_id are looked up in instances.json.
        bad = [k for k in ("ref_id", "ann_id", "image_id")
               if not (type(ref[k]) is int if k == "ref_id" else is_id(ref[k]))]
        if bad or not isinstance(ref["split"], str):
            field = bad[0] if bad else "split"
            raise DataError(path, f"ref has {field} {ref[field]!r} of the wrong type", record=f"refs[{i}]")
        if not isinstance(ref["sentences"], list):
            raise DataError(path, "sentences is not a list", record=f"ref_id {ref['ref_id']}")
        if ref["ref_id"] in first:
            raise DataError(path, f"ref_id listed twice (refs[{first[ref['ref_id']]}] and refs[{i}]); "
                            "their rows would be indistinguishable", record=f"ref_id {ref['ref_id']}")
        first[ref["ref_id"]] = i
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
         skips: SkipCounter | None = None, image_dir: str | Path | None = None,
         defects: SkipCounter | None = None) -> pd.DataFrame:
    """One row per (ref, sentence) of `split` (all splits if None), common schema.

    image_dir, if given, is where the images' file_names live (COCO train2014 or
    saiaprtc12); image_path is set for the files that exist there.
    """
    skips = SkipCounter() if skips is None else skips
    defects = SkipCounter(kind="kept with a defect") if defects is None else defects
    folder = dataset_dir(root, dataset, split_by)
    refs_path = folder / refs_file(split_by)
    instances_path = folder / "instances.json"
    refs = read_refs(refs_path)
    coco = read_coco(instances_path, ("images", "annotations", "categories"))
    for ref in refs:
        if ref["split"] not in KNOWN_SPLITS:
            raise DataError(refs_path, f"ref is in unknown split {ref['split']!r} (known: {', '.join(KNOWN_SPLITS)})",
                            record=f"ref_id {ref['ref_id']}")
    available = sorted({r["split"] for r in refs})
    if split is not None and split not in available:
        raise DataError(refs_path, f"no refs in split {split!r}; splits present: {available}")

    cols: dict[str, list] = {c: [] for c in (
        "image_id", "image_path", "image_width", "image_height", "region_id", "x1", "y1", "x2", "y2",
        "mask_rle", "expression", "tokens", "category", "split", "ref_id", "sent_id")}
    sent_ids: set = set()
    for ref in refs:
        if split is not None and ref["split"] != split:
            continue
        sentences = ref["sentences"]
        skips.read("expressions", len(sentences))
        record = f"ref_id {ref['ref_id']}"
        ann = coco.anns.get(ref["ann_id"])
        if ann is None:
            skips.add("ref_without_annotation", refs_path, record, len(sentences))
            continue
        img = coco.imgs.get(ann["image_id"])
        if img is None:
            skips.add("annotation_without_image", instances_path, f"annotation {ann['id']}", len(sentences))
            continue
        if str(ref["image_id"]) != str(img["id"]):  # the rows would put the ref's words on another image
            raise DataError(refs_path, f"ref is on image {ref['image_id']!r} but its annotation {ann['id']!r} "
                            f"is on image {img['id']!r} in {instances_path.name}", record=record)
        box = instance_box(instances_path, ann, img)
        if isinstance(box, str):
            skips.add(box, instances_path, f"annotation {ann['id']}", len(sentences))
            continue
        x, y, w, h = box
        mask, mask_defect = None, "mask_missing"
        if ann.get("segmentation"):
            mask_defect = segmentation_problem(ann["segmentation"], img["height"], img["width"])
            if mask_defect is None:
                mask = annotation_mask(instances_path, ann, img)
        cat_id = ref.get("category_id", ann.get("category_id"))
        cat = coco.cats.get(cat_id) if is_id(cat_id) else None
        image_path = None
        if image_dir is not None and (Path(image_dir) / img["file_name"]).is_file():
            image_path = str(Path(image_dir) / img["file_name"])
        kept = 0
        for sentence in sentences:
            text = (sentence.get("raw") or sentence.get("sent") or "") if isinstance(sentence, dict) else None
            if not isinstance(text, str):
                raise DataError(refs_path, f"sentence is not a dict with raw/sent: {sentence!r}", record=record)
            sent_id = sentence.get("sent_id")
            if sent_id is not None and type(sent_id) is not int:
                raise DataError(refs_path, f"sent_id {sent_id!r} is not an integer", record=record)
            if sent_id is not None and sent_id in sent_ids:
                skips.add("duplicate_sent_id", refs_path, f"{record} sent_id {sent_id}")
                continue
            if not text.strip():
                skips.add("empty_expression", refs_path, f"{record} sent_id {sent_id}")
                continue
            tokens = tokenize(text)
            if not tokens:  # punctuation only ("?!"): nothing to embed or to ground
                skips.add("no_tokens", refs_path, f"{record} sent_id {sent_id}")
                continue
            if sent_id is not None:
                sent_ids.add(sent_id)
            kept += 1
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
            cols["tokens"].append(tokens)
            cols["category"].append(cat["name"] if cat else None)
            cols["split"].append(ref["split"])
            cols["ref_id"].append(ref["ref_id"])
            cols["sent_id"].append(sent_id)
        # Defects count the rows kept (a row dropped above is already a skip).
        if image_dir is not None and image_path is None:
            defects.add("image_missing", Path(image_dir) / img["file_name"], record, kept)
        if mask is None:
            defects.add(mask_defect, instances_path, f"annotation {ann['id']}", kept)
        if cat is None:
            defects.add("unknown_category", instances_path, record, kept)
    log.info("%s (%s) %s: %d sentences (%d skipped, %d kept with a defect)", dataset, split_by,
             split or "all splits", len(cols["image_id"]), skips.total, defects.total)
    df = to_frame(pd.DataFrame(cols))
    return df.astype({"ref_id": "Int64", "sent_id": "Int64"})
