"""The vision-only/text-only paper's stages end to end on a tiny synthetic world in a tmp dir: the refer
layout fetched and prepared, the LSTM-CNN rows at both resolutions (learned, fixed GloVe, + synthesized),
the category FCN, the expression classifier, the full model with its learned alpha, and every row's
evaluation (with the novel-word subset)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from tests.conftest import tiny_config

SMALL = {
    "text_objseg": {"pretrained": False, "input_size": 64,
                    "model": {"embed_dim": 8, "text_hidden": 12, "classifier_hidden": 16, "feature_dim": 16},
                    "lowres_training": {"steps": 12, "batch_size": 8}, "highres_training": {"steps": 6, "batch_size": 8},
                    "eval_batch_size": 8},
    "training": {"checkpoint_every": 5, "log_every": 2},
    "vision_text_only": {
        "glove_vocabulary": 3000, "synthesized_ratio": 0.5, "full_training": {"steps": 6, "batch_size": 8},
        "lowres_training": {"steps": 12, "warmup_steps": 3}, "highres_training": {"steps": 6},
        "category": {"fcn_hidden": 8, "fcn_training": {"steps": 10, "batch_size": 4}, "text_hidden": 8, "mlp_hidden": 8,
                     "classifier_training": {"steps": 20, "batch_size": 8}}},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fetch and prepare once: coco (instances, class-name expressions) and refcocog (G-Ref style)."""
    import os

    from stages import fetch_data, prepare_coco, prepare_refer, synth_expressions

    root = tmp_path_factory.mktemp("vto")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = tiny_config(SMALL)
        for name in ("coco", "refcocog"):
            fetch_data.run(cfg, name)
        prepare_coco.run(cfg, "coco")
        synth_expressions.run(cfg, "coco")
        prepare_refer.run(cfg, "refcocog")
    finally:
        os.chdir(cwd)
    return root


def test_rows_train_and_evaluate_end_to_end(world, monkeypatch):
    from stages import (
        evaluate_vision_text_only,
        evaluate_vision_text_only_fused,
        train_category_fcn,
        train_expression_classifier,
        train_vision_text_only_full,
        train_vision_text_only_highres,
        train_vision_text_only_lowres,
    )

    monkeypatch.chdir(world)
    cfg = tiny_config(SMALL)
    for variant in ("refcocog_baseline", "refcocog_synthesized"):
        low = train_vision_text_only_lowres.run(cfg, variant)
        assert low["train/steps"] == 12
        curve = pd.read_csv(world / f"reports/plots/train_vision_text_only_lowres/{variant}.csv")
        assert curve["loss"].iloc[-3:].mean() < curve["loss"].iloc[:3].mean()  # it learns
        high = train_vision_text_only_highres.run(cfg, variant)
        assert high["train/steps"] == 6
    # synthesized_instances unique: at most ratio x referring rows, of the instances alone in their class.
    assert 0 < low["train/synthesized_rows"] <= round(0.5 * low["train/referring_rows"])
    assert low["train/embedding/words"] > 3000  # GloVe's top words and the training words
    # Fixed GloVe: the trained embedding matrix is still GloVe's.
    weights = torch.load(world / "models/vision_text_only_highres/refcocog_synthesized/model.pt", weights_only=True)
    low_weights = torch.load(world / "models/vision_text_only_lowres/refcocog_synthesized/model.pt", weights_only=True)
    assert torch.equal(weights["text.embed.weight"], low_weights["text.embed.weight"])

    fcn = train_category_fcn.run(cfg)
    assert fcn["classes"] == 9 and fcn["train/steps"] == 10
    classifier = train_expression_classifier.run(cfg, "refcocog")
    assert classifier["train/expressions"] > 0 and classifier["train/skipped_without_class"] == 0
    full = train_vision_text_only_full.run(cfg, "refcocog")
    assert 0 < full["alpha"] < 1 and full["alpha"] != 0.5  # learned

    ev = evaluate_vision_text_only.run(cfg, "refcocog_baseline")
    for key in ("val/prec_at_0.5", "val/prec_at_0.9", "val/overall_iou", "val/mean_iou"):
        assert 0.0 <= ev[key] <= 1.0
    table = pd.read_parquet(world / "data/evaluate_vision_text_only/refcocog_baseline/queries.parquet")
    assert len(table) == ev["val/queries"] and table["novel_words"].sum() == ev["val/novel_words/queries"]
    fused = evaluate_vision_text_only_fused.run(cfg, "refcocog")
    for row in ("category", "full"):
        saved = json.loads((world / f"reports/metrics/evaluate_vision_text_only/refcocog_{row}.json").read_text())
        assert saved["val/queries"] == ev["val/queries"] and 0 < saved["alpha"] < 1
        queries = pd.read_parquet(world / f"data/evaluate_vision_text_only_fused/refcocog/{row}.parquet")
        assert (queries["region_id"] == table["region_id"]).all()  # the same queries, paired
    assert fused["full/alpha"] == pytest.approx(full["alpha"])


def test_full_model_needs_its_parts(world, monkeypatch, tmp_path):
    from refexp.data.skips import DataError
    from stages import train_vision_text_only_full

    monkeypatch.chdir(world)
    cfg = tiny_config({**SMALL, "paths": {"models": str(tmp_path / "empty_models")}})
    with pytest.raises(DataError, match="train_vision_text_only_highres refcocog_synthesized first"):
        train_vision_text_only_full.run(cfg, "refcocog")
