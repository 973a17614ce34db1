"""COCO loader on malformed input (instances and captions JSON written in tmp_path): each case is
a DataError naming the file and the record, or a counted skip with its exact reason and count."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from refexp.data import coco
from refexp.data.skips import DataError, SkipCounter

IMAGE = {"id": 1, "file_name": "COCO_val2014_000000000001.jpg", "width": 20, "height": 10}
CATEGORY = {"id": 5, "name": "cat", "supercategory": "animal"}


def ann(ann_id: int, **kw) -> dict:
    out = {"id": ann_id, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 24.0,
           "bbox": [2, 3, 6, 4], "segmentation": [[2, 3, 8, 3, 8, 7, 2, 7]]}
    out.update(kw)
    return out


def instances(tmp_path: Path, annotations: list, images=None, categories=None) -> Path:
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps({"images": [IMAGE] if images is None else images, "annotations": annotations,
                                "categories": [CATEGORY] if categories is None else categories}))
    return path


# ---------------------------------------------------------------- DataError: file and record named

ERRORS = [
    # (case id, instances() kwargs, record named, message)
    ("bbox_strings", {"annotations": [ann(1), ann(2, bbox="abc")]}, "annotation 2", "bbox"),
    ("bbox_string_values", {"annotations": [ann(3, bbox=["2", "3", "6", "4"])]}, "annotation 3", "bbox"),
    ("bbox_nan", {"annotations": [ann(4, bbox=[2, float("nan"), 6, 4])]}, "annotation 4", "finite"),
    ("bbox_inf_width", {"annotations": [ann(5, bbox=[2, 3, float("inf"), 4])]}, "annotation 5", "finite"),
    ("bbox_three_numbers", {"annotations": [ann(6, bbox=[2, 3, 6])]}, "annotation 6", "bbox"),
    ("bbox_dict", {"annotations": [ann(7, bbox={"x": 2, "y": 3, "w": 6, "h": 4})]}, "annotation 7", "bbox"),
    ("annotation_id_twice", {"annotations": [ann(8), ann(9), ann(8, bbox=[0, 0, 3, 3])]}, "annotations[2]",
     "annotation id 8 listed twice"),
    ("image_id_twice", {"annotations": [ann(1)], "images": [IMAGE, {**IMAGE, "file_name": "other.jpg"}]},
     "images[1]", "image id 1 listed twice"),
    ("category_id_twice", {"annotations": [ann(1)], "categories": [CATEGORY, {**CATEGORY, "name": "dog"}]},
     "categories[1]", "category id 5 listed twice"),
    ("image_id_is_list", {"annotations": [ann(1)], "images": [{**IMAGE, "id": [1]}]}, "images[0]", "has id"),
    ("image_width_zero", {"annotations": [ann(1)], "images": [{**IMAGE, "width": 0}]}, "images[0]", "has size"),
    ("image_height_string", {"annotations": [ann(1)], "images": [{**IMAGE, "height": "10"}]}, "images[0]", "has size"),
    ("image_without_file_name", {"annotations": [ann(1)], "images": [{"id": 1, "width": 20, "height": 10}]},
     "images[0]", "needs id, file_name"),
    ("image_entry_is_list", {"annotations": [ann(1)], "images": [[1, "a.jpg", 20, 10]]}, "images[0]", "not an object"),
    ("annotation_image_id_is_list", {"annotations": [ann(1, image_id=[1])]}, "annotations[0]", "has image_id"),
    ("annotation_without_category_id", {"annotations": [{"id": 1, "image_id": 1, "bbox": [1, 1, 2, 2]}]},
     "annotations[0]", "needs"),
    ("category_without_name", {"annotations": [ann(1)], "categories": [{"id": 5}]}, "categories[0]", "name"),
    ("iscrowd_not_0_or_1", {"annotations": [ann(1, iscrowd="yes")]}, "annotation 1", "iscrowd"),
    ("area_string", {"annotations": [ann(2, area="big")]}, "annotation 2", "area"),
    ("segmentation_number", {"annotations": [ann(3, segmentation=5)]}, "annotation 3", "bad segmentation"),
    ("rle_without_counts", {"annotations": [ann(4, segmentation={"size": [10, 20]})]}, "annotation 4",
     "bad segmentation"),
]


@pytest.mark.parametrize("kwargs, record, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_values_are_data_errors_naming_file_and_record(tmp_path, kwargs, record, message):
    path = instances(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message) as err:
        coco.load_instances(path)
    assert err.value.file == str(path) and err.value.record == record
    assert f"instances_val2014.json, record {record!r}" in str(err.value)


def test_wrong_top_level_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps([ann(1)]))
    with pytest.raises(DataError, match="expected a COCO JSON object, got list") as err:
        coco.load_instances(path)
    assert err.value.file == str(path)


# ---------------------------------------------------------------- counted skips: reason and count

SKIPS = [
    # (case id, the bad annotation, reason); each file also holds one good annotation
    ("polygon_4_coordinates", ann(2, segmentation=[[2, 3, 8, 7]]), "bad_polygon"),  # pycocotools: a box
    ("polygon_2_coordinates", ann(2, segmentation=[[2, 3]]), "bad_polygon"),  # pycocotools: "not supported"
    ("polygon_empty_part", ann(2, segmentation=[[]]), "bad_polygon"),
    ("polygon_not_nested", ann(2, segmentation=[2, 3, 8, 3, 8, 7]), "bad_polygon"),
    ("polygon_nested_twice", ann(2, segmentation=[[[2, 3], [8, 3], [8, 7]]]), "bad_polygon"),
    ("polygon_odd_coordinates", ann(2, segmentation=[[2, 3, 8, 3, 8, 7, 2]]), "bad_polygon"),
    ("polygon_string_coordinate", ann(2, segmentation=[[2, 3, 8, "3", 8, 7]]), "bad_polygon"),
    ("polygon_second_part_degenerate", ann(2, segmentation=[[2, 3, 8, 3, 8, 7], [1, 1]]), "bad_polygon"),
    ("rle_wrong_size", ann(2, iscrowd=1, segmentation={"size": [20, 10], "counts": [0, 200]}), "bad_rle"),
    ("rle_runs_do_not_cover_image", ann(2, iscrowd=1, segmentation={"size": [10, 20], "counts": [0, 150]}),
     "bad_rle"),
    ("rle_negative_run", ann(2, iscrowd=1, segmentation={"size": [10, 20], "counts": [250, -50]}), "bad_rle"),
    ("rle_empty_string", ann(2, iscrowd=1, segmentation={"size": [10, 20], "counts": ""}), "bad_rle"),
    ("zero_width", ann(2, bbox=[1, 1, 0, 5]), "nonpositive_box_size"),
    ("negative_height", ann(2, bbox=[1, 1, 5, -2]), "nonpositive_box_size"),
    ("box_beyond_image", ann(2, bbox=[15, 0, 10, 5]), "box_outside_image"),  # x + w = 25 > 20 + 1
    ("box_negative_origin", ann(2, bbox=[-5, 0, 4, 5]), "box_outside_image"),
    ("image_not_listed", ann(2, image_id=7), "annotation_without_image"),
    ("unknown_category", ann(2, category_id=99), "unknown_category"),
    ("no_segmentation", ann(2, segmentation=[]), "annotation_without_mask"),
]


@pytest.mark.parametrize("bad, reason", [s[1:] for s in SKIPS], ids=[s[0] for s in SKIPS])
def test_bad_annotations_are_counted_skips(tmp_path, bad, reason):
    skips = SkipCounter()
    df = coco.load_instances(instances(tmp_path, [ann(1), bad]), skips=skips)
    assert df["region_id"].tolist() == ["1"]
    assert skips.as_metrics() == {f"skipped/{reason}": 1}
    assert skips.examples[reason][0][1].endswith("2")  # names the annotation
    assert len(df) + skips.total == skips.inputs["instances"] == 2


def test_box_within_a_pixel_of_the_edge_is_kept(tmp_path):
    # Polygon-derived boxes may end a fraction past the edge; a pixel of slack keeps them.
    skips = SkipCounter()
    df = coco.load_instances(instances(tmp_path, [ann(1, bbox=[0, 0, 20.4, 10.0])]), skips=skips)
    assert len(df) == 1 and skips.total == 0


# ---------------------------------------------------------------- captions

def captions(tmp_path: Path, annotations: list) -> Path:
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps({"images": [IMAGE], "annotations": annotations}))
    return path


def test_caption_errors_and_skips(tmp_path):
    good = {"id": 1, "image_id": 1, "caption": "A cat."}
    with pytest.raises(DataError, match=r"captions_val2014\.json, record 'annotations\[1\]'.*listed twice"):
        coco.load_captions(captions(tmp_path, [good, {**good, "caption": "A dog."}]))
    with pytest.raises(DataError, match=r"captions_val2014\.json, record 'annotation 2'.*not a string"):
        coco.load_captions(captions(tmp_path, [good, {"id": 2, "image_id": 1, "caption": ["A", "dog"]}]))
    skips = SkipCounter()
    df = coco.load_captions(captions(tmp_path, [good, {"id": 2, "image_id": 1, "caption": " "},
                                                {"id": 3, "image_id": 9, "caption": "A cow."}]), skips=skips)
    assert df["caption_id"].tolist() == ["1"]
    assert skips.as_metrics() == {"skipped/caption_without_image": 1, "skipped/empty_caption": 1}
    assert len(df) + skips.total == skips.inputs["captions"] == 3
