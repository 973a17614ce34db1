"""prepare_referit / prepare_coco on layouts with bad records: rows + skips = input in every unit,
defects counted apart, missing cross-check files reported, an empty split a DataError naming its file."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from refexp.data.prepare import prepare_coco, prepare_referit
from refexp.data.skips import DataError
from refexp.paths import Paths
from stages import prepare_referit as prepare_referit_stage
from tests.conftest import tiny_config

SPLITS = ("train", "val", "test")


def jpeg(width: int, height: int) -> bytes:
    # Noise, so that most of the file is entropy-coded data (a cut lands there, not in the headers).
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def referit_layout(root: Path, queries: dict[str, dict], boxes: dict, sizes: dict, imlists=SPLITS,
                   images: dict[str, bytes] | None = None, masks: dict[str, np.ndarray] | None = None) -> Path:
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split, q in queries.items():
        (ann / f"referit_query_{split}.json").write_text(json.dumps(q))
    (ann / "referit_bbox.json").write_text(json.dumps(boxes))
    (ann / "referit_imsize.json").write_text(json.dumps(sizes))
    (root / "splits").mkdir(exist_ok=True)
    for split in imlists:
        ids = sorted({k.rsplit("_", 1)[0] for k in queries.get(split, {})})
        (root / "splits" / f"referit_{split}_imlist.txt").write_text("".join(i + "\n" for i in ids))
    if images is not None:
        (root / "images").mkdir(exist_ok=True)
        for name, data in images.items():
            (root / "images" / name).write_bytes(data)
    if masks is not None:
        (root / "mask").mkdir(exist_ok=True)
        for region_id, seg in masks.items():
            scipy.io.savemat(root / "mask" / f"{region_id}.mat", {"segimg_t": seg})
    return root


SIZES = {f"{i}.jpg": [40, 30] for i in range(1, 7)}
BOXES = {f"{i}_1": [2, 2, 20, 20] for i in range(1, 7)}
GOOD = {"train": {"1_1": ["red ball", "the ball"], "2_1": ["a cube"]}, "val": {"3_1": ["blue cone"]},
        "test": {"4_1": ["green ring"]}}


def _segmentation(region_id: str) -> np.ndarray:
    seg = np.ones((30, 40), np.uint8)
    seg[2:21, 2:21] = 0
    return seg


def test_rows_plus_skips_equal_input_with_bad_records(tmp_path):
    queries = {
        "train": {**GOOD["train"], "5_1": ["", "a box", "..."],   # empty (skip), kept, no tokens (skip)
                  "9_1": ["no such box"], "bad": ["no index"]},   # region_without_box, malformed_region_id
        "val": {**GOOD["val"], "6_1": ["far away"]},              # 6_1's box is outside its image
        "test": GOOD["test"]}
    boxes = {**BOXES, "6_1": [30, 2, 45, 20]}
    root = referit_layout(tmp_path, queries, boxes, SIZES)
    df, _, m = prepare_referit(root, "bad", 1, 20, tmp_path)
    assert m["input/expressions"] == sum(len(v) for q in queries.values() for v in q.values()) == 11
    assert {k: v for k, v in m.items() if k.startswith("skipped/")} == {
        "skipped/empty_expression": 1, "skipped/no_tokens": 1, "skipped/region_without_box": 1,
        "skipped/malformed_region_id": 1, "skipped/box_outside_image": 1}
    rows = sum(m[f"{s}/tuples"] for s in SPLITS)
    assert rows == len(df) == 6
    assert rows + sum(v for k, v in m.items() if k.startswith("skipped/")) == m["input/expressions"]
    assert not any(k.startswith("kept_with_defect/") for k in m)  # none: no image or mask folder
    assert m["checks/image_files_checked"] is False and m["checks/mask_files_checked"] is False
    assert all(m[f"checks/split_list_cross_checked/{s}"] for s in SPLITS)


def test_empty_training_query_file_is_a_data_error_naming_it(tmp_path):
    root = referit_layout(tmp_path, {**GOOD, "train": {}}, BOXES, SIZES)
    with pytest.raises(DataError, match="the train split has no expressions left: 0 read") as err:
        prepare_referit(root, "bad", 1, 20, tmp_path)
    assert Path(err.value.file).name == "referit_query_train.json"


def test_split_whose_every_record_is_skipped_is_a_data_error_with_the_reasons(tmp_path):
    root = referit_layout(tmp_path, {**GOOD, "val": {"3_1": ["  ", ""], "7_1": ["x"]}}, BOXES, SIZES)
    with pytest.raises(DataError) as err:
        prepare_referit(root, "bad", 1, 20, tmp_path)
    assert Path(err.value.file).name == "referit_query_val.json"
    assert "3 read, skipped: empty_expression 2, region_without_box 1" in str(err.value)


def test_image_in_two_splits_is_a_data_error(tmp_path):
    root = referit_layout(tmp_path, {**GOOD, "test": {"1_2": ["the ball again"]}}, {**BOXES, "1_2": [1, 1, 5, 5]},
                          SIZES)
    with pytest.raises(DataError, match="image 1 is in both the train and the test split") as err:
        prepare_referit(root, "bad", 1, 20, tmp_path)
    assert Path(err.value.file).name == "referit_query_test.json" and err.value.record == "1"


def test_missing_split_list_is_stated_in_the_metrics(tmp_path, caplog):
    root = referit_layout(tmp_path, GOOD, BOXES, SIZES, imlists=("train", "test"))
    _, _, m = prepare_referit(root, "bad", 1, 20, tmp_path)
    assert m["checks/split_list_cross_checked/val"] is False
    assert m["checks/split_list_cross_checked/train"] is True and m["checks/imcrop_cross_checked"] is False
    assert any("referit_val_imlist.txt" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_image_and_mask_defects_are_counted_and_left_na(tmp_path):
    good = jpeg(40, 30)
    images = {"1.jpg": good,                    # 1_1: 2 tuples, fine
              "2.jpg": good[:-100],             # truncated: PIL opens it, decoding fails later
              "3.jpg": b"not an image",         # unreadable
              "4.jpg": jpeg(30, 40)}            # the annotations say 40x30
    masks = {"1_1": _segmentation("1_1"), "2_1": np.ones((30, 40), np.uint8), "3_1": _segmentation("3_1")}
    root = referit_layout(tmp_path, GOOD, BOXES, SIZES, images=images, masks=masks)
    df, _, m = prepare_referit(root, "bad", 1, 20, tmp_path)
    assert {k: v for k, v in m.items() if k.startswith("kept_with_defect/")} == {
        "kept_with_defect/image_truncated": 1, "kept_with_defect/image_unreadable": 1,
        "kept_with_defect/image_size_mismatch": 1, "kept_with_defect/mask_empty": 1,
        "kept_with_defect/mask_missing": 1}
    assert len(df) == m["input/expressions"] == 5 and not any(k.startswith("skipped/") for k in m)
    with_image = df.dropna(subset=["image_path"])
    assert set(with_image["image_id"]) == {"1"} and (tmp_path / with_image["image_path"].iloc[0]).is_file()
    assert set(df.dropna(subset=["mask_rle"])["region_id"]) == {"1_1", "3_1"}
    assert m["checks/image_files_checked"] is True and m["checks/mask_files_checked"] is True


def test_image_named_but_missing_on_disk_is_counted(tmp_path):
    root = referit_layout(tmp_path, GOOD, BOXES, SIZES, images={"1.jpg": jpeg(40, 30)})
    df, _, m = prepare_referit(root, "bad", 1, 20, tmp_path)
    assert m["kept_with_defect/image_missing"] == 3  # 2_1, 3_1, 4_1: one tuple each
    assert df["image_path"].isna().sum() == 3


def test_stage_metrics_json_carries_the_accounts(in_tmp_dir):
    cfg = tiny_config({"datasets": {"bad": {"format": "referit", "source": "local", "root": "unused"}}})
    paths = Paths.from_config(cfg)
    queries = {**GOOD, "train": {**GOOD["train"], "8_1": ["no box here"]}}
    referit_layout(paths.raw("bad"), queries, BOXES, SIZES, imlists=("train", "val"), images={"1.jpg": jpeg(40, 30)})
    m = prepare_referit_stage.run(cfg, "bad")
    assert json.loads(paths.metrics("prepare_referit", "bad").read_text()) == m
    assert m["input/expressions"] == 6 and m["skipped/region_without_box"] == 1
    assert m["kept_with_defect/image_missing"] == 3 and m["checks/split_list_cross_checked/test"] is False


# ---------------------------------------------------------------- COCO

def coco_layout(root: Path, split_annotations: dict[str, tuple[list, list]], images: bool = True) -> Path:
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split, (instances, captions) in split_annotations.items():
        folder = f"{split}2014"
        imgs = [{"id": i, "file_name": f"COCO_{folder}_{i:012d}.jpg", "width": 20, "height": 10} for i in (1, 2)]
        (ann / f"instances_{folder}.json").write_text(json.dumps(
            {"images": imgs, "annotations": instances, "categories": [{"id": 5, "name": "cat"}]}))
        (ann / f"captions_{folder}.json").write_text(json.dumps({"images": imgs, "annotations": captions}))
        if images:
            (root / folder).mkdir(exist_ok=True)
            (root / folder / imgs[0]["file_name"]).write_bytes(jpeg(20, 10))  # image 2 is missing
    return root


def inst(ann_id, image_id=1, **kw):
    out = {"id": ann_id, "image_id": image_id, "category_id": 5, "iscrowd": 0, "area": 24.0, "bbox": [2, 3, 6, 4],
           "segmentation": [[2, 3, 8, 3, 8, 7, 2, 7]]}
    out.update(kw)
    return out


def cap(cap_id, image_id=1, caption="a cat on a mat"):
    return {"id": cap_id, "image_id": image_id, "caption": caption}


def test_coco_rows_plus_skips_equal_input_per_unit(tmp_path):
    root = coco_layout(tmp_path, {
        "train": ([inst(1), inst(2, image_id=2), inst(3, segmentation=[[1, 1, 4, 4]]), inst(4, bbox=[0, 0, 0, 3]),
                   inst(5, image_id=9)],
                  [cap(1), cap(2, image_id=2), cap(3, caption="  "), cap(4, caption="?!"), cap(5, image_id=9)]),
        "val": ([inst(11)], [cap(11)])})
    caps, instances, _, m = prepare_coco(root, "bad", 1, 20, tmp_path)
    for unit, table in (("captions", caps), ("instances", instances)):
        skipped = sum(v for k, v in m.items() if k.startswith(f"skipped/{unit}/"))
        assert len(table) + skipped == m[f"input/{unit}"], unit
    assert m["input/instances"] == 6 and m["input/captions"] == 6
    assert {k: v for k, v in m.items() if k.startswith("skipped/")} == {
        "skipped/captions/caption_without_image": 1, "skipped/captions/empty_caption": 1,
        "skipped/captions/no_tokens": 1, "skipped/instances/annotation_without_image": 1,
        "skipped/instances/bad_polygon": 1, "skipped/instances/nonpositive_box_size": 1}
    # image 2 is listed but its file is not there: kept, counted, image_path <NA>
    assert m["kept_with_defect/captions/image_missing"] == 1 and m["kept_with_defect/instances/image_missing"] == 1
    assert caps.loc[caps["image_id"] == "2", "image_path"].isna().all()
    assert m["checks/image_files_checked/train2014"] is True


def test_coco_split_with_no_rows_is_a_data_error_naming_the_file(tmp_path):
    root = coco_layout(tmp_path, {"train": ([inst(1, image_id=9)], [cap(1)]), "val": ([inst(11)], [cap(11)])})
    with pytest.raises(DataError, match="the train split has no instances left: 1 read, skipped: "
                                        "annotation_without_image 1") as err:
        prepare_coco(root, "bad", 1, 20, tmp_path)
    assert Path(err.value.file).name == "instances_train2014.json"


def test_coco_without_image_folders_states_the_check_was_not_made(tmp_path):
    root = coco_layout(tmp_path, {"train": ([inst(1)], [cap(1)]), "val": ([inst(11)], [cap(11)])}, images=False)
    caps, instances, _, m = prepare_coco(root, "bad", 1, 20, tmp_path)
    assert m["checks/image_files_checked/train2014"] is False and m["checks/image_files_checked/val2014"] is False
    assert not any(k.startswith("kept_with_defect/") for k in m)
    assert caps["image_path"].isna().all() and instances["image_path"].isna().all()
