"""Visual Genome loaders on the real v1.2 and v1.0 samples, counts checked against json.load."""
from __future__ import annotations

import json

import pytest

from refexp.data.skips import DataError, SkipCounter
from refexp.data.visual_genome import find_file, load_images, load_regions
from tests.conftest import require_shared

pytestmark = pytest.mark.shared


def test_v12_regions_match_raw_json():
    path = require_shared("visual_genome", "v1.2", "region_descriptions.json_samples.json")
    raw = [r for im in json.loads(path.read_text()) for r in im["regions"]]
    df = load_regions(path)
    assert len(df) == len(raw) == 7278
    assert df["region_id"].tolist() == [r["region_id"] for r in raw]
    assert df["image_id"].tolist() == [r["image_id"] for r in raw]
    assert df["phrase"].tolist() == [r["phrase"] for r in raw]
    assert df["width"].tolist() == [r["width"] for r in raw]
    first = df.iloc[0]
    assert (first.image_id, first.region_id, first.phrase, first.x, first.y, first.width, first.height) == (
        1, 1382, "the clock is green in colour", 421, 57, 82, 139)


def test_v10_field_names_map_to_v12_columns():
    path = require_shared("visual_genome", "v1.0", "region_descriptions.json_samples.json")
    raw = [r for im in json.loads(path.read_text()) for r in im["regions"]]
    df = load_regions(path)
    assert len(df) == len(raw) == 6472
    assert df["region_id"].tolist() == [r["id"] for r in raw]
    assert df["image_id"].tolist() == [r["image"] for r in raw]
    images = load_images(require_shared("visual_genome", "v1.0", "image_data.json_samples.json"))
    raw_images = json.loads(require_shared("visual_genome", "v1.0", "image_data.json_samples.json").read_text())
    assert images["image_id"].tolist() == [im["id"] for im in raw_images]


def test_v12_images():
    path = require_shared("visual_genome", "v1.2", "image_data.json_samples.json")
    raw = json.loads(path.read_text())
    df = load_images(path)
    assert len(df) == len(raw) == 100
    assert df.loc[0, ["image_id", "width", "height"]].tolist() == [1, 800, 600]
    assert df["coco_id"].isna().all()
    assert find_file(path.parent, "image_data.json") == path


def test_truncated_file_names_file_and_last_region(tmp_path):
    src = require_shared("visual_genome", "v1.2", "region_descriptions.json_samples.json").read_bytes()
    cut = tmp_path / "region_descriptions.json"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(DataError) as err:
        load_regions(cut)
    assert str(cut) in str(err.value) and "truncated" in str(err.value)
    assert isinstance(err.value.record, int)  # the last region read before the cut


def test_malformed_region_is_counted_not_dropped_silently(tmp_path):
    path = tmp_path / "region_descriptions.json"
    path.write_text(json.dumps([{"regions": [
        {"region_id": 1, "image_id": 1, "phrase": "a man on a horse", "x": 0, "y": 0, "width": 5, "height": 5},
        {"region_id": 2, "image_id": 1, "phrase": "no box"},
        {"region_id": 3, "image_id": 1, "phrase": "a dog", "x": "left", "y": 0, "width": 5, "height": 5},
    ]}]))
    skips = SkipCounter()
    df = load_regions(path, skips)
    assert df["region_id"].tolist() == [1]
    assert skips.as_metrics() == {"skipped/malformed_region": 2}
    with pytest.raises(DataError, match="record 2"):
        load_regions(path)
