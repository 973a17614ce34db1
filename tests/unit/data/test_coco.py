"""COCO loader on the real samples in ../shared/data/coco, bad input on tiny files in tmp."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from refexp.data import coco
from refexp.data.skips import DataError, SkipCounter
from tests.conftest import require_shared

SAMPLES_2014 = ("coco", "annotations_2014_samples")


@pytest.fixture(scope="module")
def val2017_small() -> Path:
    return require_shared("coco", "val2017_3img", "instances_val2017_small.json")


@pytest.mark.shared
def test_val2017_small_instances(val2017_small):
    raw = json.loads(val2017_small.read_text())
    skips = SkipCounter()
    df = coco.load_instances(val2017_small, skips=skips)
    assert len(df) == len(raw["annotations"]) == 34 and skips.total == 0
    assert set(df["image_id"]) == {"397133", "37777", "448263"}
    first = raw["annotations"][0]
    row = df.iloc[0]
    x, y, w, h = first["bbox"]
    assert row["region_id"] == str(first["id"])
    assert (row.x1, row.y1) == (x, y)
    assert row.x2 == pytest.approx(x + w - 1) and row.y2 == pytest.approx(y + h - 1)
    cats = {c["id"]: c["name"] for c in raw["categories"]}
    assert row["category"] == cats[first["category_id"]]
    assert row["image_path"] == "val2017/000000397133.jpg"
    assert (row.image_width, row.image_height) == (640, 427)
    assert df["iscrowd"].sum() == sum(a["iscrowd"] for a in raw["annotations"]) == 1


@pytest.mark.shared
def test_masks_equal_pycocotools_ann_to_rle(val2017_small):
    df = coco.load_instances(val2017_small)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(val2017_small))
    for row in df.itertuples():
        ref = reference.annToRLE(reference.anns[int(row.region_id)])
        assert row.mask_rle == ref["counts"].decode("ascii"), row.region_id


@pytest.mark.shared
def test_decoded_mask_area_matches_annotation_area(val2017_small):
    df = coco.load_instances(val2017_small)
    polygons = df[df["iscrowd"] == 0]
    assert len(polygons) == 33
    for row in polygons.itertuples():
        mask = coco.decode_rle(row.mask_rle, row.image_height, row.image_width)
        assert mask.shape == (row.image_height, row.image_width) and mask.dtype == bool
        # Rasterised polygons differ from the polygon area by boundary pixels only.
        assert abs(mask.sum() - row.area) <= max(0.1 * row.area, 40), row.region_id
        ys, xs = np.nonzero(mask)
        assert xs.min() >= np.floor(row.x1) - 1 and xs.max() <= np.ceil(row.x2) + 1


@pytest.mark.shared
def test_crowd_uncompressed_rle_decodes_to_its_runs(val2017_small):
    # The sample's one crowd annotation (image 448263, stored at 320x240) has area 18419,
    # but its own run lengths cover 12852 pixels: the file's area field is stale, so
    # the decoded mask is checked against the runs, counted here from the raw JSON.
    raw = json.loads(val2017_small.read_text())
    crowd_ann = next(a for a in raw["annotations"] if a["iscrowd"])
    foreground = sum(crowd_ann["segmentation"]["counts"][1::2])  # runs alternate 0s, 1s
    assert foreground == 12852
    df = coco.load_instances(val2017_small)
    crowd = df[df["iscrowd"] == 1].iloc[0]
    mask = coco.decode_rle(crowd.mask_rle, crowd.image_height, crowd.image_width)
    assert mask.sum() == foreground
    ys, xs = np.nonzero(mask)
    x, y, w, h = crowd_ann["bbox"]
    # The mask's extent is pycocotools' toBbox of it; the stored crowd box is one pixel
    # short of it on the right and bottom (276x122 vs 277x123).
    rle = {"size": [crowd.image_height, crowd.image_width], "counts": crowd.mask_rle.encode("ascii")}
    assert mask_utils.toBbox(rle).tolist() == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert np.allclose([xs.min(), ys.min(), xs.max(), ys.max()], [x, y, x + w - 1, y + h - 1], atol=1)


@pytest.mark.parametrize("name, kept", [("instances_val2014.json_samples.json", 1),
                                        ("instances_train2014.json_samples.json", 0)])
@pytest.mark.shared
def test_2014_samples_count_annotations_without_image(name, kept):
    path = require_shared(*SAMPLES_2014, name)
    raw = json.loads(path.read_text())
    image_ids = {img["id"] for img in raw["images"]}
    expected_kept = sum(a["image_id"] in image_ids for a in raw["annotations"])
    assert expected_kept == kept  # as PROVENANCE.md says
    skips = SkipCounter()
    df = coco.load_instances(path, skips=skips)
    assert len(df) == expected_kept
    assert skips.as_metrics() == {"skipped/annotation_without_image": len(raw["annotations"]) - expected_kept}
    assert list(df.columns)[:6] == ["image_id", "file_name", "image_path", "image_width", "image_height", "region_id"]
    if kept:
        assert df["image_path"].iloc[0].startswith("val2014/COCO_val2014_")


@pytest.mark.parametrize("name, kept", [("captions_val2014.json_samples.json", 4),
                                        ("captions_train2014.json_samples.json", 0)])
@pytest.mark.shared
def test_2014_caption_samples(name, kept):
    path = require_shared(*SAMPLES_2014, name)
    raw = json.loads(path.read_text())
    images = {img["id"]: img for img in raw["images"]}
    with_image = [a for a in raw["annotations"] if a["image_id"] in images]
    assert len(with_image) == kept
    skips = SkipCounter()
    df = coco.load_captions(path, skips=skips)
    assert skips.as_metrics() == {"skipped/caption_without_image": 100 - kept}
    assert df["caption"].tolist() == [a["caption"] for a in with_image]
    assert df["caption_id"].tolist() == [str(a["id"]) for a in with_image]
    assert df["file_name"].tolist() == [images[a["image_id"]]["file_name"] for a in with_image]
    if kept:
        assert df["tokens"].iloc[0] == ["a", "small", "closed", "toilet", "in", "a", "cramped", "space"]


@pytest.mark.shared
def test_categories(val2017_small):
    cats = coco.load_categories(val2017_small)
    assert len(cats) == 80
    assert cats.iloc[0].tolist() == [1, "person", "person"]
    assert cats["category_id"].is_monotonic_increasing


# ---------------------------------------------------------------- tiny files

def tiny_coco(tmp_path: Path, annotations: list[dict], name: str = "instances_val2014.json") -> Path:
    data = {
        "images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg", "width": 20, "height": 10}],
        "annotations": annotations,
    }
    if name.startswith("instances"):
        data["categories"] = [{"id": 5, "name": "cat", "supercategory": "animal"}]
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def polygon_ann(ann_id: int, **kw) -> dict:
    ann = {"id": ann_id, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 24.0,
           "bbox": [2, 3, 6, 4], "segmentation": [[2, 3, 8, 3, 8, 7, 2, 7]]}
    ann.update(kw)
    return ann


def test_rle_inputs_and_image_path_from_file_name(tmp_path):
    full = np.zeros((10, 20), dtype=np.uint8, order="F")
    full[3:7, 2:8] = 1
    compressed = mask_utils.encode(full)
    compressed["counts"] = compressed["counts"].decode("ascii")
    # uncompressed RLE, column-major run lengths starting with zeros
    flat = full.flatten(order="F")
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    anns = [polygon_ann(1), polygon_ann(2, segmentation=compressed),
            polygon_ann(3, iscrowd=1, segmentation={"size": [10, 20], "counts": runs})]
    path = tiny_coco(tmp_path, anns)
    df = coco.load_instances(path)
    assert df["image_path"].tolist() == ["val2014/COCO_val2014_000000000001.jpg"] * 3
    for row in df.itertuples():
        mask = coco.decode_rle(row.mask_rle, 10, 20)
        assert mask.sum() == 24, row.region_id
    assert df["x2"].tolist() == [7.0] * 3 and df["y2"].tolist() == [6.0] * 3
    assert coco.load_instances(path, image_dir="images/val").loc[0, "image_path"].startswith("images/val/")


def test_bad_annotations_are_counted(tmp_path):
    anns = [polygon_ann(1), polygon_ann(2, bbox=[1, 1, 0, 5]), polygon_ann(3, category_id=99),
            polygon_ann(4, image_id=7), polygon_ann(5, segmentation=[])]
    skips = SkipCounter()
    df = coco.load_instances(tiny_coco(tmp_path, anns), skips=skips)
    assert df["region_id"].tolist() == ["1"]
    assert skips.as_metrics() == {"skipped/annotation_without_image": 1, "skipped/annotation_without_mask": 1,
                                  "skipped/nonpositive_box_size": 1, "skipped/unknown_category": 1}


def test_bad_files_name_the_file(tmp_path):
    path = tiny_coco(tmp_path, [polygon_ann(1)])
    path.write_text(path.read_text()[:50])
    with pytest.raises(DataError, match=r"instances_val2014\.json: malformed JSON"):
        coco.load_instances(path)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match=r"list\.json"):
        coco.load_captions(tmp_path / "list.json")
    (tmp_path / "noann.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"noann\.json.*annotations"):
        coco.load_captions(tmp_path / "noann.json")
    with pytest.raises(DataError, match="file not found"):
        coco.load_instances(tmp_path / "absent.json")


def test_bad_records_name_the_record(tmp_path):
    path = tiny_coco(tmp_path, [polygon_ann(1, bbox=[1, 2])])
    with pytest.raises(DataError, match="annotation 1"):
        coco.load_instances(path)
    path = tiny_coco(tmp_path, [polygon_ann(2, segmentation={"size": [10, 20]})])
    with pytest.raises(DataError, match="annotation 2.*segmentation"):
        coco.load_instances(path)


def test_captions_empty_is_counted(tmp_path):
    anns = [{"id": 1, "image_id": 1, "caption": "A cat on a mat."}, {"id": 2, "image_id": 1, "caption": "  "}]
    skips = SkipCounter()
    df = coco.load_captions(tiny_coco(tmp_path, anns, name="captions_val2014.json"), skips=skips)
    assert df["tokens"].tolist() == [["a", "cat", "on", "a", "mat"]]
    assert skips.as_metrics() == {"skipped/empty_caption": 1}


def test_reads_the_synthetic_world(tmp_path):
    from refexp.data import synthetic

    counts = synthetic.generate(tmp_path, 8, seed=3, formats=("coco",))
    ann = tmp_path / "coco" / "annotations"
    skips = SkipCounter()
    instances = [coco.load_instances(ann / f"instances_{s}2014.json", skips=skips) for s in ("train", "val")]
    captions = [coco.load_captions(ann / f"captions_{s}2014.json", skips=skips) for s in ("train", "val")]
    assert skips.total == 0
    assert sum(map(len, instances)) == counts["coco_instances"]
    assert sum(map(len, captions)) == counts["coco_captions"]
    for part in instances:
        for row in part.itertuples():
            assert (tmp_path / "coco" / row.image_path).is_file()
            mask = coco.decode_rle(row.mask_rle, row.image_height, row.image_width)
            assert mask.any()
            ys, xs = np.nonzero(mask)
            assert np.allclose([xs.min(), ys.min(), xs.max(), ys.max()], [row.x1, row.y1, row.x2, row.y2], atol=1)
