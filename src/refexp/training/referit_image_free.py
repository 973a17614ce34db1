"""The real image-free ReferIt experiment (issue 5, item 5).

The complete real ReferIt annotations (boxes, expressions, image sizes, splits; no images) are
enough to train models that never look at pixels. On the real train split we train
- the image-free SCRC (x_spatial and text only; refexp.training.scrc, variant
  `referit_image_free.scrc_variant`), scored by P@1 over each test image's annotated boxes;
- the text-only attention regression (`referit_image_free.regression_variant`, use_image: false),
  whose normalised box is mapped to each test image, scored by accuracy (IoU >= 0.5);
and compare them on the real test split (60,105 tuples) with two baselines that need no model:
- `test/chance_p_at_1`: exact expected P@1 of a uniform pick among the image's annotated boxes;
- `test/constant_box_accuracy`: the mean training box (normalised) mapped to each test image.

Models and curves of this run live under models/referit_image_free/ and
reports/referit_image_free/, apart from the embedded runs of the same variants.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import pandas as pd

from refexp.config import Config, ConfigError
from refexp.data.skips import DataError
from refexp.metrics.chance import chance_p_at_1, constant_box_accuracy, group_baselines, mean_normalised_box
from refexp.paths import Paths
from refexp.training.attention_regression import evaluate_variant, train_variant

log = logging.getLogger(__name__)

NAME = "referit_image_free"


def run_paths(paths: Paths) -> Paths:
    """Where this run's models and curves go (never over the embedded runs' artifacts)."""
    return dataclasses.replace(paths, models=paths.models / NAME, reports=paths.reports / NAME)


def _scrc_config(cfg: Config) -> Config:
    """cfg with the image-free SCRC variant's training overrides extended by ours."""
    s = cfg.referit_image_free
    variant = cfg.scrc.variant(s.scrc_variant)
    if variant.use_box or variant.use_context:
        raise ConfigError(f"referit_image_free.scrc_variant '{s.scrc_variant}' reads images "
                          "(needs use_box: false and use_context: false)")
    variant = variant.model_copy(update={"training": {**variant.training, **s.scrc_training}})
    scrc = cfg.scrc.model_copy(update={"variants": {**cfg.scrc.variants, s.scrc_variant: variant}})
    return cfg.model_copy(update={"scrc": scrc})


def _regression_section(cfg: Config):
    s = cfg.referit_image_free
    section = cfg.attention_regression
    if s.regression_variant not in section.variants:
        raise ConfigError(f"referit_image_free.regression_variant: no attention_regression variant "
                          f"'{s.regression_variant}' (have {sorted(section.variants)})")
    overrides = {**section.variants[s.regression_variant], **s.regression_model}
    section = section.model_copy(update={"dataset": s.dataset, "variants": {s.regression_variant: overrides}})
    if section.variant_model(s.regression_variant).use_image:
        raise ConfigError(f"referit_image_free.regression_variant '{s.regression_variant}' reads images "
                          "(needs use_image: false)")
    return section


def baselines(tuples: pd.DataFrame) -> dict:
    train = tuples.loc[tuples["split"] == "train"]
    test = tuples.loc[tuples["split"] == "test"]
    if train.empty or test.empty:
        raise DataError("tuples.parquet", "the image-free experiment needs train and test tuples")
    mean_box = mean_normalised_box(train)
    # Per target size (box under / at least 10% of the image): ReferIt mixes sky-sized regions with small objects.
    chance_by_size, constant_by_size = group_baselines(train, test, kinds=[])
    return {
        "test/chance_p_at_1": chance_p_at_1(test),
        "test/constant_box_accuracy": constant_box_accuracy(train, test),
        **{f"test/chance_p_at_1/{g}": v for g, v in chance_by_size.items() if v is not None},
        **{f"test/constant_box_accuracy/{g}": v for g, v in constant_by_size.items() if v is not None},
        "constant_box/normalised_xywh": [round(float(v), 6) for v in mean_box],
        "train/tuples": int(len(train)), "train/images": int(train["image_id"].nunique()),
        "test/tuples": int(len(test)), "test/images": int(test["image_id"].nunique()),
        "test/regions": int(test["region_id"].nunique()),
    }


def run_experiment(cfg: Config, paths: Paths, *, progress: bool = False) -> tuple[dict, dict]:
    """Train and evaluate both image-free models; return (metrics, details for the report)."""
    from refexp.training import scrc

    s = cfg.referit_image_free
    cfg.dataset(s.dataset)
    tuples_path = paths.tuples(s.dataset)
    if not tuples_path.exists():
        raise DataError(tuples_path, f"missing; run fetch_data and prepare_referit for '{s.dataset}' first "
                                     "(make referit-image-free does)")
    tuples = pd.read_parquet(tuples_path)
    metrics: dict = {"dataset": s.dataset}
    started = time.perf_counter()
    metrics.update(baselines(tuples))
    log.info("baselines: chance P@1 %.4f, constant box %.4f", metrics["test/chance_p_at_1"],
             metrics["test/constant_box_accuracy"])
    rpaths = run_paths(paths)

    section = _regression_section(cfg)
    training = cfg.training.merged(section.training).merged(s.regression_training)
    reg_train = train_variant(section, training, s.regression_variant, rpaths, seed=cfg.run.seed,
                              deterministic=cfg.run.deterministic, stage="train_regression", model_name="regression",
                              progress=progress)
    reg_eval, reg_pred = evaluate_variant(section, s.regression_variant, rpaths, seed=cfg.run.seed,
                                          model_name="regression")
    if reg_eval["test/queries"] != metrics["test/tuples"]:
        raise DataError(tuples_path, f"regression scored {reg_eval['test/queries']} of {metrics['test/tuples']} test tuples")
    metrics["test/accuracy"] = reg_eval["test/accuracy"]
    metrics["test/regression_mean_iou"] = reg_eval["test/mean_iou"]
    for size in ("small_target", "large_target"):
        if f"test/accuracy/{size}" in reg_eval:
            metrics[f"test/accuracy/{size}"] = reg_eval[f"test/accuracy/{size}"]
    metrics["regression/train_steps"] = reg_train["train/steps"]
    metrics["regression/train_samples_per_s"] = reg_train["train/samples_per_s"]
    metrics["regression/test_ms_per_query"] = reg_eval["test/ms_per_query"]

    scfg = _scrc_config(cfg)
    scrc_train = scrc.finetune(scfg, rpaths, s.scrc_variant, dataset=s.dataset, progress=progress)
    scrc_eval, scrc_pred = scrc.evaluate(scfg, rpaths, s.scrc_variant, dataset=s.dataset)
    metrics["test/p_at_1"] = scrc_eval["test/p_at_1"]
    metrics["test/p_at_1_length_normalised"] = scrc_eval["test/p_at_1_length_normalised"]
    metrics["scrc/queries"] = scrc_eval["test/queries"]
    metrics["scrc/train_steps"] = scrc_train.get("train/steps", 0)
    # Two independent computations of the same chance level must agree.
    metrics["scrc/chance_p_at_1_check"] = scrc_eval["test/chance_p_at_1"]
    if abs(scrc_eval["test/chance_p_at_1"] - metrics["test/chance_p_at_1"]) > 1e-9:
        log.warning("chance P@1 differs: %.6f (metrics.chance) vs %.6f (SCRC evaluation)",
                    metrics["test/chance_p_at_1"], scrc_eval["test/chance_p_at_1"])
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    return metrics, {"regression_predictions": reg_pred, "scrc_predictions": scrc_pred}


def run_settings(cfg: Config, paths: Paths) -> dict:
    """What the report states about the run: curve files, model and training settings."""
    s = cfg.referit_image_free
    rpaths = run_paths(paths)
    section = _regression_section(cfg)
    scfg = _scrc_config(cfg)
    return {"regression_curve": rpaths.plots("train_regression", s.regression_variant),
            "scrc_curve": rpaths.plots("train_scrc", s.scrc_variant),
            "regression_training": cfg.training.merged(section.training).merged(s.regression_training).model_dump(),
            "regression_model": section.variant_model(s.regression_variant).model_dump(),
            "scrc_training": scfg.training.merged(scfg.scrc.training).merged(
                scfg.scrc.variant(s.scrc_variant).training).model_dump()}
