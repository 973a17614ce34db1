"""Visual Genome loaders on malformed input (v1.2 JSON written in tmp_path): each case is a DataError
naming the file (and the record where there is one), or a counted skip with its exact reason and count."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from refexp.data.skips import DataError, SkipCounter
from refexp.data.visual_genome import load_images, load_region_graph_counts, load_regions


def region(region_id, image_id=1, **kw):
    out = {"region_id": region_id, "image_id": image_id, "phrase": "a man on a horse",
           "x": 1, "y": 2, "width": 30, "height": 20}
    out.update(kw)
    return out


def write(tmp_path: Path, data, name="region_descriptions.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# ---------------------------------------------------------------- DataError: the file and cause named

FILE_ERRORS = [
    # (case id, file text or data, message)
    ("top_level_object", {"regions": [region(1)], "id": 1}, "top level is an object, expected a JSON list"),
    ("top_level_object_of_images", {"1": {"regions": [region(1)]}}, "top level is an object"),
    ("top_level_string", '"regions"', "top level is"),
    ("empty_file", "", "empty file"),
    ("whitespace_only", "  \n", "empty file"),
    ("truncated", json.dumps([{"regions": [region(1), region(2)]}, {"regions": [region(3)]}])[:-25],
     "truncated or malformed JSON after region 2"),
    # yajl rejects NaN/Infinity literals and overflowing numbers: the file is named, with the last good region.
    ("height_overflows",
     '[{"regions": [' + json.dumps(region(1)) + ']}, {"regions": [{"region_id": 2, "height": 1e999}]}]',
     "truncated or malformed JSON after region 1: parse error: numeric"),
    ("x_nan_literal", '[{"regions": [{"region_id": 2, "x": NaN}]}]', "malformed JSON before the first region"),
    ("entry_without_regions", [{"regions": [region(1)]}, {"id": 2}], r"image entry 1 \(image 2\) has no 'regions'"),
    ("entry_regions_is_dict", [{"regions": {"region_id": 1}}], "image entry 0"),
    ("entry_is_list", [[region(1)]], "image entry 0"),
]


@pytest.mark.parametrize("data, message", [e[1:] for e in FILE_ERRORS], ids=[e[0] for e in FILE_ERRORS])
def test_bad_region_files_are_data_errors_naming_the_file(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(DataError, match=message) as err:
        load_regions(path, SkipCounter())
    assert err.value.file == str(path)


@pytest.mark.parametrize("loader, name", [(load_images, "image_data.json"),
                                          (load_region_graph_counts, "region_graphs.json")])
def test_other_files_with_an_object_at_top_level_are_data_errors(tmp_path, loader, name):
    path = write(tmp_path, {"image_id": 1, "width": 800, "height": 600}, name)
    with pytest.raises(DataError, match="top level is an object") as err:
        loader(path, SkipCounter())
    assert err.value.file == str(path)


# ---------------------------------------------------------------- regions: counted skips

REGION_SKIPS = [
    # (case id, the bad region, reason)
    ("x_string", region(2, x="left"), "malformed_region"),
    ("x_numeric_string", region(2, x="12"), "malformed_region"),
    ("width_bool", region(2, width=True), "malformed_region"),
    ("no_box", {"region_id": 2, "image_id": 1, "phrase": "a dog"}, "malformed_region"),
    ("no_image_id", {"region_id": 2, "phrase": "a dog", "x": 1, "y": 2, "width": 3, "height": 4}, "malformed_region"),
    ("region_id_fractional", region(2.5), "malformed_region"),
    ("image_id_string", region(2, image_id="one"), "malformed_region"),
    ("phrase_number", region(2, phrase=42), "malformed_region"),
    ("region_is_list", [2, 1, "a dog", 1, 2, 3, 4], "malformed_region"),
    ("region_id_twice", region(1, phrase="another phrase"), "duplicate_region_id"),
]


@pytest.mark.parametrize("bad, reason", [s[1:] for s in REGION_SKIPS], ids=[s[0] for s in REGION_SKIPS])
def test_bad_regions_are_counted_skips(tmp_path, bad, reason):
    good = json.dumps(region(1))
    bad_text = bad if isinstance(bad, str) else json.dumps(bad)
    path = write(tmp_path, f'[{{"regions": [{good}, {bad_text}]}}]')
    skips = SkipCounter()
    df = load_regions(path, skips)
    assert df["region_id"].tolist() == [1] and df["phrase"].tolist() == ["a man on a horse"]
    assert skips.as_metrics() == {f"skipped/{reason}": 1}
    assert len(df) + skips.total == skips.inputs["regions"] == 2
    with pytest.raises(DataError) as err:  # without a counter, the same record is an error naming it
        load_regions(path)
    assert err.value.file == str(path)


# ---------------------------------------------------------------- images and region graphs

IMAGE_SKIPS = [
    ("width_string", {"image_id": 2, "width": "800", "height": 600}, "malformed_image"),
    ("width_zero", {"image_id": 2, "width": 0, "height": 600}, "malformed_image"),
    ("height_fractional", {"image_id": 2, "width": 800, "height": 600.5}, "malformed_image"),
    ("no_size", {"image_id": 2, "url": "x/VG_100K/2.jpg"}, "malformed_image"),
    ("coco_id_string", {"image_id": 2, "width": 800, "height": 600, "coco_id": "abc"}, "malformed_image"),
    ("image_id_twice", {"image_id": 1, "width": 10, "height": 10}, "duplicate_image"),
]


@pytest.mark.parametrize("bad, reason", [s[1:] for s in IMAGE_SKIPS], ids=[s[0] for s in IMAGE_SKIPS])
def test_bad_images_are_counted_skips(tmp_path, bad, reason):
    path = write(tmp_path, [{"image_id": 1, "width": 800, "height": 600, "url": "x/VG_100K/1.jpg",
                             "coco_id": None, "flickr_id": 5}, bad], "image_data.json")
    skips = SkipCounter()
    df = load_images(path, skips)
    assert df["image_id"].tolist() == [1] and df[["width", "height"]].iloc[0].tolist() == [800, 600]
    assert skips.as_metrics() == {f"skipped/{reason}": 1}
    assert len(df) + skips.total == skips.inputs["images"] == 2


GRAPH_SKIPS = [
    ("no_region_id", {"objects": [{"object_id": 1}], "relationships": []}, "malformed_region_graph"),
    ("objects_dict", {"region_id": 2, "objects": {"object_id": 1}, "relationships": []}, "malformed_region_graph"),
    ("region_id_twice", {"region_id": 1, "objects": [], "relationships": []}, "duplicate_region_graph"),
]


@pytest.mark.parametrize("bad, reason", [s[1:] for s in GRAPH_SKIPS], ids=[s[0] for s in GRAPH_SKIPS])
def test_bad_region_graphs_are_counted_skips_or_errors(tmp_path, bad, reason):
    good = {"region_id": 1, "objects": [{"object_id": 1}, {"object_id": 2}], "relationships": [{}]}
    path = write(tmp_path, [{"regions": [good, bad]}], "region_graphs.json")
    skips = SkipCounter()
    df = load_region_graph_counts(path, skips)
    assert df.values.tolist() == [[1, 2, 1]]
    assert skips.as_metrics() == {f"skipped/{reason}": 1}
    with pytest.raises(DataError):  # the stage passes no counter: never a silent drop
        load_region_graph_counts(path)
