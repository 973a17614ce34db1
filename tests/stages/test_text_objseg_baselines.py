"""Table 1's baselines of the segmentation paper end to end on the tiny mask world (32 x 32 images, a red
and a green 12 x 12 square each): propose_masks -> train_text_objseg_baseline (per_word, grounder,
proposal_classifier) -> evaluate_text_objseg_baseline for every row, SCRC's from a tiny SCRC."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.stages.test_text_objseg import mask_world, tiny_config  # noqa: F401  (mask_world: a fixture)

BASELINES = {
    "whole_image": {"kind": "whole_image"},
    "per_word_average": {"kind": "per_word", "combine": "average"},
    "per_word_intersection": {"kind": "per_word", "combine": "intersection"},
    "per_word_union": {"kind": "per_word", "combine": "union"},
    "scrc_bbox": {"kind": "scrc", "output": "bbox"},
    "scrc_grabcut": {"kind": "scrc", "output": "grabcut"},
    "grounder_bbox": {"kind": "grounder", "output": "bbox"},
    "grounder_grabcut": {"kind": "grounder", "output": "grabcut"},
    "proposal_classification": {"kind": "proposal_classification"},
}
SCORER = {"embed_dim": 8, "text_hidden": 12, "hidden": 16,
          "training": {"optimizer": "adam", "lr": 0.01, "steps": 60, "batch_size": 8}}


TINY_SCRC = {"backbone": "tiny", "pretrained": False, "image_feature": "pooled", "image_size": 32, "embed_dim": 8,
             "hidden": 16, "feature_dim": 8, "crop_size": 16, "n_proposals": 20,
             "training": {"steps": 40, "lr": 0.01}, "variants": {"scrc_tiny": {"transfer": False}}}


def baseline_config():
    return tiny_config(
        {"scrc": TINY_SCRC},
        baselines=BASELINES, freeze_conv=True, cache_frozen_features=True,
        per_word={"stop_words": ["the"], "positive_weight": 3.0,
                  "training": {"optimizer": "adam", "lr": 0.02, "steps": 60, "batch_size": 8}},
        grounder=SCORER, proposal_classifier=SCORER, mask_proposals={"count": 20}, n_box_proposals=20,
        scrc_variant="scrc_tiny", grabcut_iterations=2)


def test_every_table1_row_end_to_end(mask_world):  # noqa: F811
    from stages import evaluate_text_objseg_baseline, propose_masks, train_scrc, train_text_objseg_baseline

    cfg = baseline_config()
    proposed = propose_masks.run(cfg)
    assert proposed["images"] == 24 and proposed["images_without_proposals"] == 0
    table = pd.read_parquet(mask_world / "data/propose_masks/referit/proposals.parquet")
    assert table.groupby("image_id").size().max() <= 20 and proposed["proposals"] == len(table)

    for part in ("per_word", "grounder", "proposal_classifier"):
        trained = train_text_objseg_baseline.run(cfg, part)
        assert trained["train/steps"] == 60 and trained["train/tuples"] == 32
        curve = pd.read_csv(mask_world / f"reports/plots/train_text_objseg_baseline/{part}.csv")
        assert curve["loss"].iloc[-3:].mean() < curve["loss"].iloc[:3].mean(), part  # it learns
    words = json.loads((mask_world / "models/text_objseg_baseline/per_word/words.json").read_text())
    assert sorted(words) == ["green", "red", "square"]  # every training word but the stop words
    train_scrc.run(cfg, "scrc_tiny")

    results, tables = {}, {}
    for name in BASELINES:
        results[name] = evaluate_text_objseg_baseline.run(cfg, name)
        saved = json.loads((mask_world / f"reports/metrics/evaluate_text_objseg_baseline/{name}.json").read_text())
        assert saved == pytest.approx(results[name]) and saved["test/queries"] == 16
        assert {"test/prec_at_0.5", "test/prec_at_0.9", "test/overall_iou", "test/mean_iou"} <= set(saved)
        tables[name] = pd.read_parquet(mask_world / f"data/evaluate_text_objseg_baseline/{name}/predictions.parquet")
        assert saved["test/mean_iou"] == pytest.approx(tables[name]["iou"].mean())

    # Per-word: every test expression has a listed word; the intersection's pixels are inside the union's,
    # and "red square" / "green square" share "square", so the union covers at least the intersection.
    assert results["per_word_average"]["test/no_known_word"] == 0
    inter, union = tables["per_word_intersection"], tables["per_word_union"]
    assert (inter["predicted_pixels"] <= union["predicted_pixels"]).all()
    # The box rows: a rectangle per query; GrabCut's outcomes account for every distinct box.
    for method in ("scrc", "grounder"):
        box, cut = results[f"{method}_bbox"], results[f"{method}_grabcut"]
        assert box["test/no_box"] == 0 and box["test/distinct_boxes"] >= 1
        assert sum(v for k, v in cut.items() if k.startswith("test/grabcut/")) == cut["test/distinct_boxes"]
    # GroundeR learns to pick the named square: far above the whole image's IoU 144/1024 per query.
    assert results["grounder_bbox"]["test/mean_iou"] > 0.3
    assert results["proposal_classification"]["test/no_proposal"] == 0
    assert results["proposal_classification"]["test/mean_iou"] > 144 / 1024

    # The report puts every row beside the paper's, with the GrabCut-over-bbox claims.
    from stages import report_text_objseg
    report_text_objseg.run(cfg)
    report = (mask_world / "reports/segmentation.md").read_text()
    for row in ("whole image", "per-word average", "per-word intersection", "per-word union", "SCRC bbox",
                "SCRC grabcut", "GroundeR bbox", "GroundeR grabcut", "MCG classification"):
        assert f"| {row} (paper) |" in report and f"**{row} (ours, `" in report, row
    assert "| `scrc_grabcut` > `scrc_bbox` |" in report and "| `grounder_grabcut` > `grounder_bbox` |" in report
    assert "0 of 16 test expressions (0.00%) have none of them" in report


def test_a_baseline_without_its_trained_part_is_a_clear_error(mask_world):  # noqa: F811
    from refexp.data.skips import DataError
    from refexp.paths import Paths
    from refexp.training import text_objseg_baselines

    cfg = baseline_config()
    with pytest.raises(DataError, match="run train_text_objseg_baseline per_word first"):
        text_objseg_baselines.evaluate(cfg, Paths.from_config(cfg), "per_word_union")
    with pytest.raises(DataError, match="run propose_masks first"):
        text_objseg_baselines.train(cfg, Paths.from_config(cfg), "proposal_classifier")
    with pytest.raises(DataError, match="no baseline 'nope'"):
        text_objseg_baselines.evaluate(cfg, Paths.from_config(cfg), "nope")


def test_baseline_params_are_validated():
    with pytest.raises(ValueError, match="`combine`"):
        tiny_config(baselines={"bad": {"kind": "per_word"}})
    with pytest.raises(ValueError, match="`output`"):
        tiny_config(baselines={"bad": {"kind": "whole_image", "output": "bbox"}})
    with pytest.raises(ValueError, match="scrc_variant 'missing'"):
        tiny_config({"scrc": TINY_SCRC}, baselines={"s": {"kind": "scrc", "output": "bbox"}}, scrc_variant="missing")


def test_expressions_without_a_listed_word_predict_nothing_and_are_counted(mask_world):  # noqa: F811
    from stages import evaluate_text_objseg_baseline, train_text_objseg_baseline

    cfg = baseline_config()
    train_text_objseg_baseline.run(cfg, "per_word")
    tuples = mask_world / "data/prepare_referit/referit/tuples.parquet"
    df = pd.read_parquet(tuples)
    test = np.flatnonzero(df["split"] == "test")[:3]
    for i in test:
        df.at[i, "tokens"] = ["blue", "circle"]  # words the per-word FCN never saw
    df.to_parquet(tuples, index=False)
    result = evaluate_text_objseg_baseline.run(cfg, "per_word_average")
    assert result["test/no_known_word"] == 3
    table = pd.read_parquet(mask_world / "data/evaluate_text_objseg_baseline/per_word_average/predictions.parquet")
    assert table["region_id"].iloc[:3].tolist() == df.loc[test, "region_id"].tolist()  # test rows keep their order
    assert (table["predicted_pixels"].iloc[:3] == 0).all() and (table["predicted_pixels"].iloc[3:] > 0).any()
