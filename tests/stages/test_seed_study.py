"""seed_study end to end on a tiny synthetic world (tmp dir): SCRC and the regression, two seeds, the
claims summary, resume of a finished study, and a restart when the params change; the segmentation
model at low and high resolution beside the regression; the GRN on a hand-made benchmark; and the
vision-only/text-only paper's rows on a synthetic G-Ref (refer layout) beside the tiny world's COCO."""
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


SEGMENTATION_VARIANTS = {"text_objseg": {}, "paper_spatial": {"spatial": 2}}


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


def segmentation_params(**lowres_training) -> dict:
    """The regression and the segmentation model (32 px, the pretrained tiny body fixed and cached), in their
    own models/ and reports/ folders."""
    raw = study_params()
    raw["text_objseg"] = {
        "dataset": "referit", "backbone": "tiny", "pretrained": True, "freeze_conv": True,
        "cache_frozen_features": True, "input_size": 32, "eval_batch_size": 32,
        "model": {"embed_dim": 8, "text_hidden": 12, "classifier_hidden": 16, "feature_dim": 16},
        # Foreground weighted up at low resolution: at 1 : 1 these few steps predict no foreground at all.
        "lowres_loss_weights": [3.0, 1.0],
        "lowres_training": {"optimizer": "adam", "lr": 0.01, "steps": 30, **lowres_training},
        "highres_training": {"optimizer": "adam", "lr": 0.005, "steps": 20},
        "variants": SEGMENTATION_VARIANTS}
    raw["seed_study"] = {"seeds": [0, 1], "models": ["attention_regression", "text_objseg"]}
    raw["paths"] = {"models": "models_seg", "reports": "reports_seg"}
    return raw


def test_seed_study_covers_segmentation(world, monkeypatch):  # noqa: F811
    from stages import seed_study

    monkeypatch.chdir(world)
    if not (world / "models_seg/backbone").exists():
        shutil.copytree(world / "models/backbone", world / "models_seg/backbone")  # the pretrained backbone
    metrics = seed_study.run(parse_config(segmentation_params()))
    scores = pd.read_csv(world / "reports_seg/seed_study/scores.csv")
    seg = scores[scores["model"] == "text_objseg"]
    rows = [f"{v}_{r}" for v in SEGMENTATION_VARIANTS for r in ("lowres", "highres")]
    # One row per (variant, resolution) at each seed, in params order; the regression's rows beside them.
    for seed in (0, 1):
        assert seg.loc[seg["seed"] == seed, "variant"].tolist() == rows
    assert len(scores[scores["model"] == "attention_regression"]) == 2 * len(REGRESSION_VARIANTS)
    assert seg["score"].between(0, 1).all() and seg["overall_iou"].between(0, 1).all()
    assert scores.loc[scores["model"] != "text_objseg", "overall_iou"].isna().all()
    # The score is prec@0.5 of the pipeline's own evaluation of that seed's model.
    from refexp.paths import Paths
    from refexp.training import text_objseg
    from refexp.training.seed_study import seed_paths

    cfg = parse_config(segmentation_params())
    seed1 = seed_config(cfg, 1)
    evaluated, table = text_objseg.evaluate(seed1, seed_paths(Paths.from_config(seed1), 1), "paper_spatial", "highres")
    at_seed1 = seg[(seg["seed"] == 1) & (seg["variant"] == "paper_spatial_highres")].iloc[0]
    assert at_seed1["score"] == pytest.approx(evaluated["test/prec_at_0.5"], abs=1e-6)
    assert at_seed1["overall_iou"] == pytest.approx(evaluated["test/overall_iou"], abs=1e-6)
    assert at_seed1["score"] == pytest.approx((table["iou"] >= 0.5).mean(), abs=1e-6)
    assert (world / "models_seg/seed_study/seed1/text_objseg_highres/paper_spatial/model.pt").exists()
    # High over low resolution, for the paper's model and our variant of it, judged over seeds and per seed.
    for variant in SEGMENTATION_VARIANTS:
        claim = f"text_objseg/claim/{variant}_highres>{variant}_lowres"
        assert metrics[f"{claim}/low"] <= metrics[f"{claim}/mean"] <= metrics[f"{claim}/high"]
        assert metrics[f"{claim}/verdict"] in {"a > b", "a < b", "not resolved"}
        assert 0 <= metrics[f"{claim}/seeds_resolved"] <= 2
    low = seg[seg["variant"] == "text_objseg_lowres"]["overall_iou"]
    # (scores.csv keeps 6 digits)
    assert metrics["text_objseg/text_objseg_lowres/overall_iou/mean"] == pytest.approx(low.mean(), abs=1e-6)
    report = (world / "reports_seg/seed_study.md").read_text()
    assert "## Segmentation from natural language expressions" in report
    assert "`text_objseg_highres` > `text_objseg_lowres`" in report
    assert "`paper_spatial_highres` > `paper_spatial_lowres`" in report
    assert "| `text_objseg_highres` | 34.02 |" in report  # the paper's prec@0.5 beside ours
    assert "SCRC" not in report.split("## Provenance")[0]  # only the models studied are described

    # A rerun resumes every training: identical scores.
    seed_study.run(parse_config(segmentation_params()))
    again = pd.read_csv(world / "reports_seg/seed_study/scores.csv")
    pd.testing.assert_series_equal(again["score"], scores["score"])

    # The digest: a segmentation baseline's params restart no seed, the model's own params do.
    from refexp.training.seed_study import _params_digest

    changed = segmentation_params()
    changed["text_objseg"]["figure_examples"] = 1
    assert _params_digest(parse_config(changed), 0) == _params_digest(cfg, 0)
    digest = (world / "models_seg/seed_study/seed0/params.sha256").read_text().strip()
    assert _params_digest(cfg, 0, Paths.from_config(cfg)) == digest
    assert _params_digest(parse_config(segmentation_params(steps=5)), 0, Paths.from_config(cfg)) != digest
    # Without the segmentation model in the study its params do not count (a study of the other models
    # keeps its seeds when they change).
    without = {**segmentation_params(steps=5), "seed_study": {"seeds": [0, 1], "models": ["attention_regression"]}}
    assert _params_digest(parse_config(without), 0) == _params_digest(
        parse_config({**segmentation_params(), "seed_study": without["seed_study"]}), 0)


def test_seed_study_params_are_validated():
    raw = study_params()
    with pytest.raises(ConfigError, match="seed_study.seeds"):
        parse_config({**raw, "seed_study": {"seeds": [3]}})
    with pytest.raises(ConfigError, match="must not repeat"):
        parse_config({**raw, "seed_study": {"seeds": [1, 1]}})
    with pytest.raises(ConfigError, match="seed_study.models"):
        parse_config({**raw, "seed_study": {"models": ["no_such_model"]}})
    assert parse_config({**raw, "seed_study": {"models": ["vision_text_only"]}}).seed_study.models == ["vision_text_only"]
    with pytest.raises(ConfigError, match="seed_study.workers"):
        parse_config({**raw, "seed_study": {"workers": 0}})


def test_seed_study_covers_the_grn_variants(tmp_path, monkeypatch):
    """The GRN paper's variants at two seeds on a hand-made benchmark: one row per (variant, seed) with R@10
    as the score, the paper's claims over seeds, and the section in the report."""
    from stages import seed_study
    from tests.conftest import tiny_config
    from tests.stages.test_grn import K, make_benchmark

    make_benchmark(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config({
        "training": {"checkpoint_every": 50, "cpu_threads": 1},
        "grn": {"embeddings": "random", "pretrained": False, "region_map_size": K, "min_word_count": 1,
                "model": {"embed_dim": 16, "text_hidden": 16, "gate_hidden": 16, "fc_dim": 16},
                "training": {"steps": 60, "batch_size": 16, "lr": 0.01}},
        "seed_study": {"seeds": [0, 1], "models": ["grn"], "workers": 1}})
    # Two of the params' variants (a merge would keep all of them).
    two = {"visual_feature": {"kind": "visual_feature"}, "grn": {}}
    cfg = cfg.model_copy(update={"grn": cfg.grn.model_copy(update={"variants": two})})
    metrics = seed_study.run(cfg)
    scores = pd.read_csv(tmp_path / "reports/seed_study/scores.csv")
    assert scores["model"].eq("grn").all() and len(scores) == 4
    assert scores[["recall_at_1", "recall_at_10", "median_rank"]].notna().all().all()
    assert (scores["score"] == scores["recall_at_10"]).all()
    # Visual Feature trains nothing: the same score at every seed; the GRN's seeds differ in their weights.
    visual = scores[scores["variant"] == "visual_feature"]["score"]
    assert visual.nunique() == 1
    assert "grn/claim/grn>visual_feature/mean" in metrics
    report = (tmp_path / "reports/seed_study.md").read_text()
    assert "## Expressional region retrieval (GRN), R@10 over the whole test corpus" in report
    assert "region_retrieval.md" in report


VISION_TEXT_ONLY_VARIANTS = {"refcocog_baseline": {"dataset": "refcocog"},
                             "refcocog_embedding": {"dataset": "refcocog", "embedding": "glove"},
                             "refcocog_synthesized": {"dataset": "refcocog", "embedding": "glove", "synthesized": True}}
VISION_TEXT_ONLY_ROWS = [*VISION_TEXT_ONLY_VARIANTS, "refcocog_category", "refcocog_full"]
REFCOCOG = {"format": "refer", "source": "synthetic", "split_by": "google"}


def vision_text_only_params(**lowres_training) -> dict:
    """vision_text_only on a synthetic G-Ref (its val split scored, as the paper) with text_objseg's tiny
    image side (64 px: at 32 px these few steps find no target), in their own models/ and reports/."""
    raw = segmentation_params()
    raw["training"] = {**raw["training"], "checkpoint_every": 100}  # a checkpoint every 2 steps is most of the time
    raw["datasets"] = {**raw["datasets"], "refcocog": REFCOCOG}
    raw["synth_expressions"] = {"datasets": ["coco"]}
    raw["text_objseg"] = {**raw["text_objseg"], "input_size": 64, "lowres_loss_weights": [10.0, 1.0],
                          "highres_loss_weights": [10.0, 1.0]}
    raw["vision_text_only"] = {
        "glove_vocabulary": 200, "lowres_training": {"steps": 40, **lowres_training}, "highres_training": {"steps": 20},
        "full_training": {"steps": 5}, "figure_examples": 1,
        "category": {"fcn_hidden": 8, "fcn_training": {"steps": 5, "batch_size": 4}, "text_hidden": 8, "mlp_hidden": 8,
                     "classifier_training": {"steps": 5, "batch_size": 8}},
        "datasets": {"refcocog": {"eval_splits": ["val"]}}, "variants": VISION_TEXT_ONLY_VARIANTS,
        "full": {"refcocog": "refcocog_synthesized"}}
    raw["seed_study"] = {"seeds": [0, 1], "models": ["vision_text_only"]}
    raw["paths"] = {"models": "models_vto", "reports": "reports_vto"}
    return raw


def add_refcocog(world) -> None:  # noqa: F811
    """The data stages vision_text_only reads, in the tiny world: a 24-image synthetic G-Ref (refer
    layout, prepare_refer), synth_expressions' class-name rows of the world's COCO, the backbone."""
    from stages import fetch_data, prepare_refer, synth_expressions

    if (world / "data/prepare_refer/refcocog/tuples.parquet").exists():
        return
    cfg = parse_config({**vision_text_only_params(), "synthetic": {"n_images": 24}})
    fetch_data.run(cfg, "refcocog")
    prepare_refer.run(cfg, "refcocog")
    synth_expressions.run(cfg, "coco")
    shutil.copytree(world / "models/backbone", world / "models_vto/backbone")


def test_seed_study_covers_vision_text_only(world, monkeypatch):  # noqa: F811
    """Each LSTM-CNN variant (its high-resolution model) and the category and full rows, at two seeds,
    scored by the pipeline's own evaluation on G-Ref val; the paper's order claims over seeds; the report
    with the paper's Table 1 beside ours; resume; and which params restart a seed."""
    from refexp.paths import Paths
    from refexp.training import vision_text_only as vto
    from refexp.training.seed_study import _params_digest, seed_paths
    from stages import seed_study

    monkeypatch.chdir(world)
    add_refcocog(world)
    cfg = parse_config(vision_text_only_params())
    metrics = seed_study.run(cfg)
    scores = pd.read_csv(world / "reports_vto/seed_study/scores.csv")
    assert scores["model"].eq("vision_text_only").all()
    for seed in (0, 1):  # params order, then the category and full rows of each dataset of `full`
        assert scores.loc[scores["seed"] == seed, "variant"].tolist() == VISION_TEXT_ONLY_ROWS
    assert scores["score"].between(0, 1).all() and scores["overall_iou"].between(0, 1).all()
    assert scores["novel_words"].between(0, 1).all()  # the held-out synonyms of the synthetic G-Ref
    assert scores["score"].gt(0).any()  # these tiny runs find some targets: the rows are not all empty

    # The score is prec@0.5 on val of the pipeline's own evaluation of that seed's models.
    seed1 = seed_config(cfg, 1)
    spaths = seed_paths(Paths.from_config(seed1), 1)
    at_seed1 = scores[scores["seed"] == 1].set_index("variant")
    evaluated, table = vto.evaluate_lstm_cnn(seed1, spaths, "refcocog_synthesized")
    assert at_seed1.loc["refcocog_synthesized", "score"] == pytest.approx(evaluated["val/prec_at_0.5"], abs=1e-6)
    assert at_seed1.loc["refcocog_synthesized", "score"] == pytest.approx((table["iou"] >= 0.5).mean(), abs=1e-6)
    assert at_seed1.loc["refcocog_synthesized", "overall_iou"] == pytest.approx(evaluated["val/overall_iou"], abs=1e-6)
    fused = vto.evaluate_fused(seed1, spaths, "refcocog")
    for part in ("category", "full"):
        assert at_seed1.loc[f"refcocog_{part}", "score"] == pytest.approx(fused[part][0]["val/prec_at_0.5"], abs=1e-6)
    for trained in ("vision_text_only_lowres/refcocog_baseline", "vision_text_only_highres/refcocog_synthesized",
                    "category_fcn/coco", "expression_classifier/refcocog", "vision_text_only_full/refcocog"):
        assert (world / "models_vto/seed_study/seed1" / trained / "model.pt").exists(), trained
    assert not (world / "models_vto/vision_text_only_highres").exists()  # never over the pipeline's models

    # The paper's claims on G-Ref: baseline < word embedding < synthesized < full, category < full, baseline < full.
    claims = {k.rsplit("/", 1)[0] for k in metrics if "/claim/" in k}
    assert claims == {"vision_text_only/claim/refcocog_embedding>refcocog_baseline",
                      "vision_text_only/claim/refcocog_synthesized>refcocog_embedding",
                      "vision_text_only/claim/refcocog_full>refcocog_synthesized",
                      "vision_text_only/claim/refcocog_full>refcocog_category",
                      "vision_text_only/claim/refcocog_full>refcocog_baseline"}
    for claim in claims:
        assert metrics[f"{claim}/low"] <= metrics[f"{claim}/mean"] <= metrics[f"{claim}/high"]
        assert metrics[f"{claim}/verdict"] in {"a > b", "a < b", "not resolved"}
        assert 0 <= metrics[f"{claim}/seeds_resolved"] <= 2
    full = scores[scores["variant"] == "refcocog_full"]["score"]
    assert metrics["vision_text_only/refcocog_full/mean"] == pytest.approx(full.mean(), abs=1e-6)
    report = (world / "reports_vto/seed_study.md").read_text()
    assert "## Vision-only and text-only data for segmentation" in report
    assert "| `refcocog_baseline` | 15.25 |" in report and "| `refcocog_full` | 21.08 |" in report  # Table 1
    assert "`refcocog_full` > `refcocog_category`" in report
    assert "`refcocog_synthesized` > `refcocog_embedding`" in report
    assert "novel words %" in report and "vision_text_only.md" in report
    before = report.split("## Provenance")[0]
    assert "SCRC" not in before and "`refcocog` (refer format)" in before

    # A rerun resumes every training: identical scores.
    seed_study.run(cfg)
    again = pd.read_csv(world / "reports_vto/seed_study/scores.csv")
    pd.testing.assert_series_equal(again["score"], scores["score"])

    # The digest: the report's figure params restart no seed; the recipe's own params and the text_objseg
    # keys it reads do, the text_objseg keys it never reads do not.
    paths = Paths.from_config(cfg)
    digest = (world / "models_vto/seed_study/seed0/params.sha256").read_text().strip()
    assert _params_digest(cfg, 0, paths) == digest

    def changed(section: str, **values) -> str:
        raw = vision_text_only_params()
        raw[section] = {**raw[section], **values}
        return _params_digest(parse_config(raw), 0, paths)

    assert changed("vision_text_only", figure_examples=2) == digest
    assert changed("text_objseg", figure_examples=1, variants={"other": {}}, dataset="coco") == digest
    assert changed("text_objseg", highres_training={"steps": 3}) != digest
    assert changed("text_objseg", input_size=32) != digest
    assert _params_digest(parse_config(vision_text_only_params(steps=5)), 0, paths) != digest
