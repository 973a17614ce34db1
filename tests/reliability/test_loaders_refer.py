"""refer loader (refs(<split_by>).p + instances.json) on malformed input written in tmp_path: each
case is a DataError naming the file and the ref, a counted skip, or a row kept with a counted defect."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from refexp.data import refer
from refexp.data.skips import DataError, SkipCounter


def sentence(sent_id, raw):
    return {"tokens": raw.lower().split(), "raw": raw, "sent": raw.lower(), "sent_id": sent_id}


def ref(ref_id, ann_id=101, split="train", sentences=None, **kw):
    sentences = [sentence(ref_id * 10, "man on the left")] if sentences is None else sentences
    out = {"ref_id": ref_id, "ann_id": ann_id, "image_id": 1, "split": split, "category_id": 1,
           "sent_ids": [s.get("sent_id") for s in sentences if isinstance(s, dict)],
           "file_name": f"COCO_train2014_000000000001_{ann_id}.jpg", "sentences": sentences}
    out.update(kw)
    return out


def annotation(ann_id, **kw):
    out = {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 50.0, "bbox": [2, 3, 10, 5],
           "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]}
    out.update(kw)
    return out


IMAGE = {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 40, "height": 30}


def write(root: Path, refs: list, annotations=None) -> Path:
    folder = root / "refcoco"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (folder / "instances.json").write_text(json.dumps({
        "images": [IMAGE], "annotations": [annotation(101)] if annotations is None else annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}))
    return root


# ---------------------------------------------------------------- DataError: file and ref named

ERRORS = [
    # (case id, refs, annotations, file named, record named, message)
    ("ref_id_string", [ref("a")], None, "refs(unc).p", "refs[0]", "ref_id 'a'"),
    ("ann_id_list", [ref(1, ann_id=[101])], None, "refs(unc).p", "refs[0]", "ann_id"),
    ("split_number", [ref(1, split=1)], None, "refs(unc).p", "refs[0]", "split"),
    ("ref_id_twice", [ref(1), ref(2), ref(1, sentences=[sentence(99, "woman")])], None, "refs(unc).p",
     "ref_id 1", r"refs\[0\] and refs\[2\]"),
    ("ref_is_list", [[1, 101, 1]], None, "refs(unc).p", "refs[0]", "not a dict"),
    ("sentences_dict", [ref(1, sentences={"raw": "man"})], None, "refs(unc).p", "ref_id 1", "not a list"),
    ("sentence_string", [ref(1, sentences=["man on the left"])], None, "refs(unc).p", "ref_id 1",
     "not a dict with raw/sent"),
    ("sent_id_string", [ref(1, sentences=[sentence("s1", "man")])], None, "refs(unc).p", "ref_id 1", "sent_id"),
    ("bbox_string", [ref(1)], [annotation(101, bbox="2 3 10 5")], "instances.json", "annotation 101", "bbox"),
    ("bbox_nan", [ref(1)], [annotation(101, bbox=[2, 3, float("nan"), 5])], "instances.json", "annotation 101",
     "finite"),
    ("annotation_id_twice", [ref(1)], [annotation(101), annotation(101, bbox=[0, 0, 1, 1])], "instances.json",
     "annotations[1]", "listed twice"),
]


@pytest.mark.parametrize("refs, annotations, file, record, message", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_bad_values_are_data_errors_naming_file_and_ref(tmp_path, refs, annotations, file, record, message):
    write(tmp_path, refs, annotations)
    with pytest.raises(DataError, match=message) as err:
        refer.load(tmp_path, "refcoco", "unc")
    assert Path(err.value.file).name == file and err.value.record == record
    assert f"{file}, record {record!r}" in str(err.value)


def test_truncated_pickle_is_a_data_error(tmp_path):
    write(tmp_path, [ref(1), ref(2)])
    path = tmp_path / "refcoco" / "refs(unc).p"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="corrupt pickle: pickle data was truncated") as err:
        refer.load(tmp_path, "refcoco", "unc")
    assert err.value.file == str(path)


# ---------------------------------------------------------------- skips (rows dropped) and defects (rows kept)

SKIPS = [
    # (case id, refs, annotations, skip reason, expressions skipped)
    ("box_beyond_image", [ref(1)], [annotation(101, bbox=[35, 3, 10, 5])], "box_outside_image", 1),
    ("negative_width", [ref(1)], [annotation(101, bbox=[2, 3, -10, 5])], "nonpositive_box_size", 1),
    ("annotation_not_listed", [ref(1, ann_id=555)], None, "ref_without_annotation", 1),
    ("sent_id_twice", [ref(1, sentences=[sentence(7, "man"), sentence(7, "the man")])], None, "duplicate_sent_id", 1),
    ("sent_id_twice_across_refs", [ref(1, sentences=[sentence(7, "man")]), ref(2, sentences=[sentence(7, "guy")])],
     None, "duplicate_sent_id", 1),
    ("empty_sentence", [ref(1, sentences=[sentence(1, "man"), sentence(2, "   ")])], None, "empty_expression", 1),
]


@pytest.mark.parametrize("refs, annotations, reason, n", [s[1:] for s in SKIPS], ids=[s[0] for s in SKIPS])
def test_bad_refs_are_counted_skips(tmp_path, refs, annotations, reason, n):
    write(tmp_path, refs, annotations)
    skips = SkipCounter()
    df = refer.load(tmp_path, "refcoco", "unc", skips=skips)
    assert skips.as_metrics() == {f"skipped/{reason}": n}
    assert len(df) + skips.total == skips.inputs["expressions"] == sum(len(r["sentences"]) for r in refs)


DEFECTS = [
    # (case id, annotation, defect reason, column left <NA>)
    ("no_segmentation", annotation(101, segmentation=[]), "mask_missing", "mask_rle"),
    ("polygon_4_coordinates", annotation(101, segmentation=[[2, 3, 12, 8]]), "bad_polygon", "mask_rle"),
    ("polygon_2_coordinates", annotation(101, segmentation=[[2, 3]]), "bad_polygon", "mask_rle"),
    ("rle_wrong_size", annotation(101, iscrowd=1, segmentation={"size": [5, 5], "counts": [0, 25]}), "bad_rle",
     "mask_rle"),
    ("unknown_category", annotation(101, category_id=9), "unknown_category", "category"),
]


@pytest.mark.parametrize("bad, reason, column", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_rows_kept_with_a_defect_are_counted(tmp_path, bad, reason, column):
    refs = [ref(1, sentences=[sentence(1, "man"), sentence(2, "the man")])]
    if reason == "unknown_category":
        refs[0]["category_id"] = 9
    write(tmp_path, refs, [bad])
    skips, defects = SkipCounter(), SkipCounter()
    df = refer.load(tmp_path, "refcoco", "unc", skips=skips, defects=defects)
    assert len(df) == 2 and skips.total == 0  # kept, not skipped
    assert defects.as_metrics() == {f"skipped/{reason}": 2}  # counted in rows
    assert df[column].isna().all()


def test_missing_image_file_is_a_counted_defect(tmp_path):
    write(tmp_path, [ref(1)])
    (tmp_path / "images").mkdir()
    defects = SkipCounter()
    df = refer.load(tmp_path, "refcoco", "unc", image_dir=tmp_path / "images", defects=defects)
    assert len(df) == 1 and pd.isna(df["image_path"].iloc[0])
    assert defects.as_metrics() == {"skipped/image_missing": 1}
