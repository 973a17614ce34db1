"""seed_study end to end on a tiny synthetic world (tmp dir): both models, two seeds, the claims
summary, resume of a finished study, and a restart when the params change."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from refexp.config import ConfigError, parse_config
from refexp.training.scrc import train_subset
from refexp.training.seed_study import seed_config
from tests.stages.test_scrc_stages import tiny_params, world  # noqa: F401  (the module-scoped world fixture)

SCRC_VARIANTS = {
    "scrc_no_context_spatial_transfer": {"use_context": False, "use_spatial": False, "transfer": False},
    "scrc_no_context_spatial": {"use_context": False, "use_spatial": False},
    "scrc_no_context_spatial_subset10": {"use_context": False, "use_spatial": False, "train_fraction": 0.5},
    "scrc_no_context_spatial_transfer_subset10": {"use_context": False, "use_spatial": False, "transfer": False,
                                                  "train_fraction": 0.5},
}
REGRESSION_VARIANTS = {
    "attention_full": {},
    "text_only": {"use_image": False, "image_attention": False, "text_attention": False},
}


def study_params(**regression_model) -> dict:
    raw = tiny_params()
    raw["scrc"] = {**raw["scrc"], "variants": SCRC_VARIANTS, "n_proposals": 5}
    raw["attention_regression"] = {
        "dataset": "referit", "backbone": "tiny", "pretrained": False, "image_size": 32, "eval_batch_size": 16,
        "model": {"embedding_dim": 8, "lstm_hidden": 12, "feature_grid": 4, "image_attention_hidden": 10,
                  "image_attention_layers": 2, "text_attention_hidden": 8, "region_hidden": 10,
                  **regression_model},
        "variants": REGRESSION_VARIANTS}
    raw["seed_study"] = {"seeds": [0, 1], "models": ["scrc", "attention_regression"]}
    return raw


def test_seed_study_end_to_end(world, monkeypatch):  # noqa: F811
    from stages import seed_study

    monkeypatch.chdir(world)
    metrics = seed_study.run(parse_config(study_params()))
    scores = pd.read_csv(world / "reports/seed_study/scores.csv")
    assert len(scores) == 2 * (len(SCRC_VARIANTS) + len(REGRESSION_VARIANTS))
    assert sorted(scores["seed"].unique()) == [0, 1] and scores["score"].between(0, 1).all()
    assert metrics["seeds"] == [0, 1]
    # The summary is computed from the per-seed rows.
    full = scores[(scores["model"] == "attention_regression") & (scores["variant"] == "attention_full")]["score"]
    assert metrics["attention_regression/attention_full/mean"] == pytest.approx(full.mean())
    assert metrics["attention_regression/attention_full/sd"] == pytest.approx(full.std(ddof=1))
    # The paper's claims present among the variants: SCRC's transfer step and the scarce-data pair,
    # and the regression's image-over-text claim.
    claims = {k.rsplit("/", 1)[0] for k in metrics if "/claim/" in k}
    assert claims == {"scrc/claim/scrc_no_context_spatial>scrc_no_context_spatial_transfer",
                      "scrc/claim/scrc_no_context_spatial_subset10>scrc_no_context_spatial_transfer_subset10",
                      "attention_regression/claim/attention_full>text_only"}
    for claim in claims:
        assert metrics[f"{claim}/low"] <= metrics[f"{claim}/mean"] <= metrics[f"{claim}/high"]
        assert metrics[f"{claim}/verdict"] in {"a > b", "a < b", "not resolved"}
    # The seed also draws the scarce-data subset (finetune reads run.seed, which seed_config sets):
    # the two seeds fine-tune on different images.
    assert (world / "models/seed_study/seed1/scrc/scrc_no_context_spatial_subset10/model.pt").exists()
    train = pd.read_parquet(world / "data/prepare_referit/referit/tuples.parquet").query("split == 'train'")
    cfg = parse_config(study_params())
    subsets = [set(train_subset(train, 0.5, seed_config(cfg, seed).run.seed)["image_id"]) for seed in (0, 1)]
    assert subsets[0] != subsets[1]
    saved = json.loads((world / "reports/metrics/seed_study.json").read_text())
    assert saved["seeds"] == [0, 1]
    report = (world / "reports/seed_study.md").read_text()
    assert "Training-seed study" in report and "`scrc_no_context_spatial` > `scrc_no_context_spatial_transfer`" in report
    assert (world / "reports/figures/seed_study/scores.png").stat().st_size > 0

    # A rerun with the same params resumes every finished training: identical scores (CPU is deterministic).
    seed_study.run(parse_config(study_params()))
    again = pd.read_csv(world / "reports/seed_study/scores.csv")
    pd.testing.assert_series_equal(again["score"], scores["score"])

    # Seeds in two worker processes, from scratch elsewhere: the same scores.
    parallel = {**study_params(), "paths": {"models": "models_parallel", "reports": "reports_parallel"}}
    shutil.copytree(world / "models/backbone", world / "models_parallel/backbone")  # the pretrained backbone
    parallel["seed_study"] = {**parallel["seed_study"], "workers": 2}
    seed_study.run(parse_config(parallel))
    in_parallel = pd.read_csv(world / "reports_parallel/seed_study/scores.csv")
    pd.testing.assert_series_equal(in_parallel["score"], scores["score"])
    assert (world / "models_parallel/seed_study/seed1/params.sha256").exists()

    # Changed params start each seed over (the stored params digest no longer matches).
    digest = (world / "models/seed_study/seed0/params.sha256").read_text()
    seed_study.run(parse_config({**study_params(dropout=0.3), "seed_study": {"seeds": [0, 1],
                                                                             "models": ["attention_regression"]}}))
    assert (world / "models/seed_study/seed0/params.sha256").read_text() != digest
    assert not (world / "models/seed_study/seed0/scrc").exists()


def test_seed_study_params_are_validated():
    raw = study_params()
    with pytest.raises(ConfigError, match="seed_study.seeds"):
        parse_config({**raw, "seed_study": {"seeds": [3]}})
    with pytest.raises(ConfigError, match="must not repeat"):
        parse_config({**raw, "seed_study": {"seeds": [1, 1]}})
    with pytest.raises(ConfigError, match="seed_study.models"):
        parse_config({**raw, "seed_study": {"models": ["grn"]}})
    with pytest.raises(ConfigError, match="seed_study.workers"):
        parse_config({**raw, "seed_study": {"workers": 0}})
