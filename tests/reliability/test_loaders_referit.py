"""ReferIt loader on malformed input, built in tmp_path in the released formats: each case is
a DataError naming the file and the record, or a counted skip with its exact reason and count."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from refexp.data import referit
from refexp.data.skips import DataError, SkipCounter

QUERIES = {"1_1": ["the red car", "car on the left"], "1_2": ["sky"], "2_1": ["man in hat"]}
BOXES = {"1_1": [0, 10, 49, 59], "1_2": [0, 0, 99, 9], "2_1": [5, 5, 20, 30]}
SIZES = {"1.jpg": [100, 80], "2.jpg": [40, 60]}
N_EXPRESSIONS = 4


def write(root: Path, queries=QUERIES, boxes=BOXES, sizes=SIZES, split="train", imlist="1\n2\n",
          raw: dict[str, str | bytes] | None = None, **extra) -> Path:
    """The released layout: annotations/*.json, splits/referit_<split>_imlist.txt; `raw` overrides
    a file's text (for JSON that json.dumps cannot write: repeated keys)."""
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    files = {f"referit_query_{split}.json": queries, "referit_bbox.json": boxes, "referit_imsize.json": sizes,
             **{f"{name}.json": data for name, data in extra.items()}}
    for name, data in files.items():
        (ann / name).write_text(json.dumps(data))  # json.dumps writes NaN / Infinity as JSON.parse-able literals
    for name, text in (raw or {}).items():
        (ann / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    if imlist is not None:
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"referit_{split}_imlist.txt").write_text(imlist)
    return root


# ---------------------------------------------------------------- DataError: file and record named

ERRORS = [
    # (case id, write() kwargs, file named, record named)
    ("box_string", {"boxes": {**BOXES, "1_1": "abc"}}, "referit_bbox.json", "1_1"),
    ("box_string_values", {"boxes": {**BOXES, "1_1": ["0", "10", "49", "59"]}}, "referit_bbox.json", "1_1"),
    ("box_nan", {"boxes": {**BOXES, "1_2": [0, float("nan"), 99, 9]}}, "referit_bbox.json", "1_2"),
    ("box_inf", {"boxes": {**BOXES, "2_1": [5, 5, float("inf"), 30]}}, "referit_bbox.json", "2_1"),
    ("box_three_numbers", {"boxes": {**BOXES, "1_2": [0, 0, 99]}}, "referit_bbox.json", "1_2"),
    ("box_dict", {"boxes": {**BOXES, "1_1": {"x": 0, "y": 10, "w": 50, "h": 50}}}, "referit_bbox.json", "1_1"),
    ("box_bool", {"boxes": {**BOXES, "2_1": [5, True, 20, 30]}}, "referit_bbox.json", "2_1"),
    ("size_zero", {"sizes": {**SIZES, "2.jpg": [0, 60]}}, "referit_imsize.json", "2.jpg"),
    ("size_fractional", {"sizes": {**SIZES, "1.jpg": [100.5, 80]}}, "referit_imsize.json", "1.jpg"),
    ("size_inf", {"sizes": {**SIZES, "1.jpg": [float("inf"), 80]}}, "referit_imsize.json", "1.jpg"),
    ("size_three_numbers", {"sizes": {**SIZES, "2.jpg": [40, 60, 3]}}, "referit_imsize.json", "2.jpg"),
    ("expressions_not_list", {"queries": {**QUERIES, "2_1": "man in hat"}}, "referit_query_train.json", "2_1"),
    ("expression_not_string", {"queries": {**QUERIES, "1_2": ["sky", 7]}}, "referit_query_train.json", "1_2"),
    ("query_key_twice", {"raw": {"referit_query_train.json":
                                 '{"1_1": ["the red car"], "1_2": ["sky"], "1_1": ["a car"]}'}},
     "referit_query_train.json", "1_1"),
    ("bbox_key_twice", {"raw": {"referit_bbox.json":
                                '{"1_1": [0, 10, 49, 59], "1_2": [0, 0, 99, 9], "2_1": [5, 5, 20, 30], '
                                '"1_2": [1, 1, 5, 5]}'}}, "referit_bbox.json", "1_2"),
    ("imsize_key_twice", {"raw": {"referit_imsize.json": '{"1.jpg": [100, 80], "2.jpg": [40, 60], "1.jpg": [9, 9]}'}},
     "referit_imsize.json", "1.jpg"),
    ("imcrop_not_list", {"referit_imcrop": {"1.jpg": "1_1 1_2", "2.jpg": ["2_1"]}}, "referit_imcrop.json", "1.jpg"),
    ("kinds_not_strings", {"referit_expression_kinds": {"1_1": ["attribute", 3]}},
     "referit_expression_kinds.json", "1_1"),
]


@pytest.mark.parametrize("kwargs, file, record", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_values_are_data_errors_naming_file_and_record(tmp_path, kwargs, file, record):
    root = write(tmp_path, **kwargs)
    with pytest.raises(DataError) as err:
        referit.load(root, "train")
    assert Path(err.value.file).name == file and err.value.record == record
    assert f"{file}, record {record!r}" in str(err.value)


FILE_ERRORS = [
    ("query_top_level_list", {"raw": {"referit_query_train.json": '[["the red car"]]'}},
     "referit_query_train.json", "expected a JSON object at top level, got list"),
    ("bbox_truncated", {"raw": {"referit_bbox.json": '{"1_1": [0, 10, 49'}}, "referit_bbox.json", "malformed JSON"),
    ("imsize_not_utf8", {"raw": {"referit_imsize.json": b'{"1.jpg": [100, 80], "\xff\xfe": [1, 1]}'}},
     "referit_imsize.json", "malformed JSON"),
]


@pytest.mark.parametrize("kwargs, file, message", [e[1:] for e in FILE_ERRORS], ids=[e[0] for e in FILE_ERRORS])
def test_unreadable_files_are_data_errors_naming_the_file(tmp_path, kwargs, file, message):
    root = write(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message) as err:
        referit.load(root, "train")
    assert Path(err.value.file).name == file


# ---------------------------------------------------------------- counted skips: reason and count

SKIPS = [
    # (case id, write() kwargs, reason, expressions skipped)
    ("region_id_without_index", {"queries": {**QUERIES, "3": ["a tree", "tree"]}}, "malformed_region_id", 2),
    ("region_id_index_not_a_number",
     {"queries": {**QUERIES, "1_x": ["a tree"]}, "boxes": {**BOXES, "1_x": [0, 0, 5, 5]}}, "malformed_region_id", 1),
    ("region_id_no_image", {"queries": {**QUERIES, "_4": ["a tree"]}}, "malformed_region_id", 1),
    ("region_without_box", {"boxes": {k: v for k, v in BOXES.items() if k != "1_1"}}, "region_without_box", 2),
    ("image_without_size", {"sizes": {"1.jpg": [100, 80]}}, "image_without_size", 1),
    ("negative_width", {"boxes": {**BOXES, "1_2": [50, 0, 10, 9]}}, "nonpositive_box_size", 1),
    ("negative_height", {"boxes": {**BOXES, "1_1": [0, 59, 49, 10]}}, "nonpositive_box_size", 2),
    ("box_beyond_image", {"boxes": {**BOXES, "2_1": [5, 5, 40, 30]}}, "box_outside_image", 1),  # x2 = width
    ("box_negative_origin", {"boxes": {**BOXES, "1_2": [-3, 0, 99, 9]}}, "box_outside_image", 1),
    ("empty_expression", {"queries": {**QUERIES, "1_2": ["  \t"]}}, "empty_expression", 1),
    ("image_not_in_split_list", {"imlist": "1\n"}, "image_not_in_split", 1),
    ("region_not_in_imcrop", {"referit_imcrop": {"1.jpg": ["1_1", "1_2"], "2.jpg": []}}, "region_not_in_imcrop", 1),
]


@pytest.mark.parametrize("kwargs, reason, n", [s[1:] for s in SKIPS], ids=[s[0] for s in SKIPS])
def test_bad_records_are_counted_skips(tmp_path, kwargs, reason, n):
    root = write(tmp_path, **kwargs)
    skips = SkipCounter()
    df = referit.load(root, "train", skips=skips)
    assert skips.as_metrics() == {f"skipped/{reason}": n}
    queries = kwargs.get("queries", QUERIES)
    expressions = sum(len(v) for v in queries.values())
    assert skips.inputs["expressions"] == expressions
    assert len(df) + skips.total == expressions  # nothing lost silently


def test_a_missing_split_list_is_reported_not_silent(tmp_path, caplog):
    root = write(tmp_path, imlist=None)
    checks: dict = {}
    with caplog.at_level(logging.WARNING, logger="refexp.data.referit"):
        df = referit.load(root, "train", checks=checks)
    assert len(df) == N_EXPRESSIONS
    assert checks == {"split_list_cross_checked/train": False, "imcrop_cross_checked": False}
    assert any("referit_train_imlist.txt" in r.getMessage() for r in caplog.records)
    write(tmp_path, referit_imcrop={"1.jpg": ["1_1", "1_2"], "2.jpg": ["2_1"]})
    referit.load(root, "train", checks=checks)
    assert checks == {"split_list_cross_checked/train": True, "imcrop_cross_checked": True}


# ---------------------------------------------------------------- masks and proposals (scipy, numpy)

def _mat(path: Path, seg) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"segimg_t": seg})
    return path


MASKS = [
    ("not_a_mat", lambda p: p.write_bytes(b"MATLAB 5.0 MAT-file, but nothing else"), "unreadable .mat"),
    ("truncated_mat", lambda p: p.write_bytes(_mat(p, np.ones((30, 40), np.uint8)).read_bytes()[:200]),
     "unreadable .mat"),
    ("cell_array", lambda p: _mat(p, np.array([["a", "b"]], dtype=object)), "holds object values"),
    ("three_dimensional", lambda p: _mat(p, np.ones((2, 3, 4), np.uint8)), r"shape \(2, 3, 4\)"),
    ("wrong_size", lambda p: _mat(p, np.ones((10, 10), np.uint8)), "mask is 10x10"),
    ("no_key", lambda p: scipy.io.savemat(p, {"other": np.ones((3, 3))}), "no key 'segimg_t'"),
]


@pytest.mark.parametrize("make, message", [m[1:] for m in MASKS], ids=[m[0] for m in MASKS])
def test_bad_mask_files_are_data_errors_naming_the_file(tmp_path, make, message):
    path = tmp_path / "mask" / "1_1.mat"
    path.parent.mkdir(parents=True)
    make(path)
    with pytest.raises(DataError, match=message) as err:
        referit.read_mask(path, image_size=(40, 30))
    assert err.value.file == str(path)


@pytest.mark.parametrize("text, message", [("1 2 3 nan\n", "non-finite"), ("1 2 3 inf\n", "non-finite"),
                                           ("1 2 3\n", "4 columns"), ("1 2 x 4\n", "malformed proposals"),
                                           ("1 2 5 6\n9 2 5 6\n", r"record 'line 2': proposal has x2 < x1")])
def test_bad_proposals_are_data_errors(tmp_path, text, message):
    path = tmp_path / "1.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        referit.load_proposals(path)
    assert err.value.file == str(path)
