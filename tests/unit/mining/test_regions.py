"""Region filters of the benchmark on hand-made cases."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from refexp.data.skips import SkipCounter
from refexp.data.visual_genome import load_region_graph_counts
from refexp.mining.regions import (
    area_filter, describes_relationship, iou_dedup_filter, multi_object_filter, validate_regions,
)


def _frame(rows):
    df = pd.DataFrame(rows, columns=["image_id", "region_id", "phrase", "x", "y", "width", "height"])
    df["image_width"], df["image_height"] = 100, 100
    return df


def test_linguistic_rule():
    for phrase in ("man wearing sneakers", "Tall buildings surrounded by trees", "a man taking a photo of the elephant",
                   "bikes are parked at the curb"):
        assert describes_relationship(phrase), phrase
    for phrase in ("a bag", "The blue sky", "cars headlights are off", "on the", "two of them", ""):
        assert not describes_relationship(phrase), phrase


def test_area_filter_bounds_are_inclusive_fractions():
    df = _frame([(1, 1, "p", 0, 0, 10, 10), (1, 2, "p", 0, 0, 10, 9), (1, 3, "p", 0, 0, 90, 100),
                 (1, 4, "p", 0, 0, 91, 100)])
    assert area_filter(df, 0.01, 0.9).tolist() == [True, False, True, False]
    assert area_filter(df, None, None).all()


def test_iou_dedup_keeps_the_larger_region():
    df = _frame([
        (1, 1, "p", 0, 0, 50, 50),    # IoU(1, 2) = 2304 / 2500 = 0.92 -> drop the smaller (2)
        (1, 2, "p", 1, 1, 48, 48),
        (1, 3, "p", 0, 0, 40, 50),    # IoU(1, 3) = 0.8 -> both stay
        (2, 4, "p", 1, 1, 48, 48),    # other image: untouched
    ])
    assert iou_dedup_filter(df, 0.9).tolist() == [True, False, True, True]
    assert iou_dedup_filter(df, None).all()


def test_multi_object_uses_graph_where_present(tmp_path):
    path = tmp_path / "region_graphs.json"
    path.write_text(json.dumps([{"image_id": 1, "regions": [
        {"region_id": 1, "objects": [{"object_id": 1}, {"object_id": 2}], "relationships": [{"relationship_id": 1}]},
        {"region_id": 2, "objects": [{"object_id": 3}], "relationships": []},
    ]}]))
    graphs = load_region_graph_counts(path)
    assert graphs.to_dict("list") == {"region_id": [1, 2], "n_objects": [2, 1], "n_relationships": [1, 0]}
    df = _frame([(1, 1, "a bag", 0, 0, 5, 5), (1, 2, "man riding a horse", 0, 0, 5, 5), (1, 3, "a man on a horse", 0, 0, 5, 5)])
    keep, how = multi_object_filter(df, graphs, "graph_or_rule")
    assert keep.tolist() == [True, False, True] and how == {"by_graph": 2, "by_rule": 1}
    keep, _ = multi_object_filter(df, graphs, "rule")
    assert keep.tolist() == [False, True, True]


def test_validate_counts_add_up_and_clips():
    regions = pd.DataFrame({
        "image_id": [1, 1, 1, 1, 9, 1], "region_id": [1, 2, 3, 4, 5, 6],
        "phrase": ["a man on a horse", " ", "caf\u00e9 on a table", "a dog", "a cat", "a man on a bike"],
        "x": [0.0, 0, 0, 0, 0, 90], "y": [0.0, 0, 0, 0, 0, 0], "width": [10.0, 10, 10, 0, 10, 20],
        "height": [10.0, 10, 10, 10, 10, 10]})
    images = pd.DataFrame({"image_id": [1], "width": [100], "height": [100]})
    skips = SkipCounter()
    out = validate_regions(regions, images, skips, "regions.json")
    assert out["region_id"].tolist() == [1, 6]
    assert skips.as_metrics() == {"skipped/empty_phrase": 1, "skipped/non_ascii_phrase": 1,
                                  "skipped/nonpositive_box_size": 1, "skipped/unknown_image": 1}
    assert len(out) + skips.total == len(regions)
    assert out.attrs["clipped_to_image"] == 1 and np.isclose(out.loc[1, "width"], 10)


def test_boxes_outside_their_image_or_of_zero_area_are_counted_with_file_and_region():
    # 100 x 100 image; boxes are [x, x + width) x [y, y + height)
    boxes = {
        11: (-20, 10, 20, 10),   # ends at x = 0: left of the image
        12: (10, -30, 10, 30),   # ends at y = 0: above it
        13: (100, 10, 10, 10),   # starts at x = 100: right of it
        14: (10, 100, 10, 10),   # starts at y = 100: below it
        15: (10, 10, 0, 10),     # zero width
        16: (10, 10, 10, 0),     # zero height
        17: (10, 10, -5, 10),    # negative width
        18: (99, 99, 10, 10),    # one pixel inside: kept, clipped to 1 x 1
        19: (10, 10, 10, 10),    # fine
    }
    regions = pd.DataFrame([{"image_id": 1, "region_id": rid, "phrase": "a cup on a table", "x": x, "y": y,
                             "width": w, "height": h} for rid, (x, y, w, h) in boxes.items()])
    images = pd.DataFrame({"image_id": [1], "width": [100], "height": [100]})
    skips = SkipCounter()
    out = validate_regions(regions, images, skips, "vg/region_descriptions.json")
    assert out["region_id"].tolist() == [18, 19]
    assert skips.as_metrics() == {"skipped/outside_image": 4, "skipped/nonpositive_box_size": 3}
    # each reason names the file and a record it dropped
    assert skips.examples["outside_image"][0] == ("vg/region_descriptions.json", "11")
    assert skips.examples["nonpositive_box_size"][0] == ("vg/region_descriptions.json", "15")
    assert out.attrs["clipped_to_image"] == 1
    assert out.loc[0, ["x", "y", "width", "height"]].tolist() == [99, 99, 1, 1]
