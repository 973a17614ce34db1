import numpy as np
import pandas as pd
import pytest

from refexp.reporting.significance import QueryScores, mask_scores, per_query_scores, significance_table


def _write(path, regions, iou):
    pd.DataFrame({"region_id": regions, "expression": ["e"] * len(regions), "image_id": [r[:2] for r in regions],
                  "iou": iou}).to_parquet(path)
    return path


def test_per_query_scores_reads_present_files_and_refuses_a_different_query_order(tmp_path):
    a = _write(tmp_path / "a.parquet", ["r1", "r2", "r3"], [0.9, 0.1, 0.5])
    b = _write(tmp_path / "b.parquet", ["r1", "r2", "r3"], [0.2, 0.6, 0.7])
    scores = per_query_scores({"a": a, "b": b, "missing": tmp_path / "none.parquet"},
                              lambda t: t["iou"] >= 0.5, ["iou"])
    assert set(scores.scores) == {"a", "b"} and scores.images.tolist() == ["r1", "r2", "r3"]
    assert scores["a"].tolist() == [1.0, 0.0, 1.0] and scores["b"].tolist() == [0.0, 1.0, 1.0]
    c = _write(tmp_path / "c.parquet", ["r2", "r1", "r3"], [0.9, 0.1, 0.5])
    with pytest.raises(ValueError, match="c.parquet.*not in the order"):
        per_query_scores({"a": a, "c": c}, lambda t: t["iou"] >= 0.5, ["iou"])


def test_significance_table_rows_and_verdicts():
    correct = QueryScores({"full": np.ones(40), "ablation": np.zeros(40), "same": np.ones(40)},
                          np.repeat(np.arange(8), 5))
    lines = significance_table(correct, [("full", "ablation"), ("ablation", "full"), ("full", "same"),
                                         ("full", "absent")], seed=0, metric="Accuracy")
    rows = [line for line in lines if line.startswith("| `")]
    assert rows == ["| `full` > `ablation` | +100.00 | [+100.00, +100.00] | holds |",
                    "| `ablation` > `full` | -100.00 | [-100.00, -100.00] | reversed |",
                    "| `full` > `same` | +0.00 | [+0.00, +0.00] | not resolved (interval spans 0) |"]
    assert significance_table(correct, [("full", "absent")], seed=0, metric="Accuracy") == []


def test_the_table_resamples_images():
    # a wins every query of two images and loses every query of the third: +33 points over 60 queries
    # looks resolved query by query, but 3 images cannot resolve it.
    images = np.repeat(["i1", "i2", "i3"], 20)
    a = np.concatenate([np.ones(40), np.zeros(20)])
    b = np.concatenate([np.zeros(40), np.ones(20)])
    lines = significance_table(QueryScores({"a": a, "b": b}, images), [("a", "b")], seed=0, metric="P@1")
    assert "over the 3 test images" in lines[0]
    assert lines[-2].endswith("| not resolved (interval spans 0) |")


def test_overall_iou_claims_resample_pixel_counts_by_image(tmp_path):
    # 12 images of 3 queries; a doubles b's intersection on every query (same unions): overall IoU 0.6 vs 0.3.
    regions = [f"i{i:02d}r{j}" for i in range(12) for j in range(3)]
    images = [r[:3] for r in regions]
    union = np.tile([100, 300, 50], 12)
    tables = {}
    for name, share in (("a", 0.6), ("b", 0.3)):
        t = pd.DataFrame({"region_id": regions, "expression": ["e"] * 36, "image_id": images,
                          "intersection": (share * union).astype(np.int64), "union": union})
        t["iou"] = t["intersection"] / t["union"]
        tables[name] = tmp_path / f"{name}.parquet"
        t.to_parquet(tables[name])
    scores = mask_scores(tables)
    overall = scores["overall_iou"]
    assert overall.denominators["a"].tolist() == union.tolist()
    # The same read gives the per-query IoU and the hits at 0.5.
    assert scores["mean_iou"]["a"] == pytest.approx(np.full(36, 0.6)) and scores["mean_iou"]["b"] == pytest.approx(0.3)
    assert scores["prec_at_0.5"]["a"].tolist() == [1.0] * 36 and scores["prec_at_0.5"]["b"].tolist() == [0.0] * 36
    assert overall["a"].sum() / overall.denominators["a"].sum() == pytest.approx(0.6)
    lines = significance_table(overall, [("a", "b"), ("b", "a")], seed=0, metric="overall IoU")
    assert "overall IoU, paired bootstrap over the 12 test images" in lines[0]
    # Every image has the same two ratios: a gap of exactly 30 points, no spread.
    assert "| `a` > `b` | +30.00 | [+30.00, +30.00] | holds |" in lines
    assert "| `b` > `a` | -30.00 | [-30.00, -30.00] | reversed |" in lines
    # A subset keeps the pixel counts paired with the scores.
    half = overall.subset(np.arange(36) < 18)
    assert len(half["a"]) == len(half.denominators["b"]) == len(half.images) == 18
