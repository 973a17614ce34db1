"""The training-seed study: every variant retrained and re-evaluated at several seeds.

The reports' paired-bootstrap intervals (refexp.metrics.bootstrap) say how far the test sample alone
could move a gap between two variants, for the one pipeline seed. Whether a paper's order survives a
different initialisation, data order or scarce-data subset is a question about training seeds: this
module trains each variant of `seed_study.models` at each of `seed_study.seeds` with the pipeline's own
training code and params (only run.seed changes) and returns one row per (model, variant, seed). For the
segmentation model each (variant, resolution) is a row, `<variant>_lowres` and `<variant>_highres`, the
high-resolution model trained from the same seed's low-resolution one, as in the pipeline.

Models and curves go under models/seed_study/seed<k>/, apart from the pipeline's runs. A params digest
is stored there: a rerun with the same params resumes killed trainings (refexp.training.engine), one
with different params starts that seed over.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from refexp.config import Config
from refexp.data.skips import DataError
from refexp.paths import Paths
from refexp.processes import die_with_parent

log = logging.getLogger(__name__)

NAME = "seed_study"
# Params sections that decide what a seed's run computes (a change restarts that seed). A model's own
# section counts only while the model is in `seed_study.models`.
STUDY_SECTIONS = ("training", "scrc", "attention_regression", "text_objseg", "grn", "run", "pretrain_backbone")
# The evaluation metric the study keeps as each variant's `score`, per model.
SCORES = {"scrc": "test/p_at_1", "attention_regression": "test/accuracy", "text_objseg": "test/prec_at_0.5",
          "grn": "test/recall_at_10"}
MODEL_DATASETS = {"scrc": ("dataset", "caption_dataset"), "attention_regression": ("dataset",),
                  "text_objseg": ("dataset",), "grn": ()}  # grn: the benchmark and its region maps, below
# Keys of a model's section that the study's runs never read (the report's figures, the segmentation
# baselines, which are deterministic or trained apart): a change of them restarts no seed. Names not (yet)
# in the section are ignored.
DIGEST_EXCLUDE = {"text_objseg": {"figure_examples", "baselines", "per_word", "grounder", "proposal_classifier",
                                  "mask_proposals", "n_box_proposals", "scrc_variant", "grabcut_iterations",
                                  "stuff_words"},
                  "grn": {"figure_examples", "eval_chunk"}}
# A retrieval query is hit when a target is among the top GRN_HIT_RANK (the GRN paper's headline R@10).
GRN_HIT_RANK = 10
# A segmentation query is hit when its mask IoU reaches this (the paper's prec@0.5, the study's score).
SEGMENTATION_HIT_IOU = 0.5


def seed_config(cfg: Config, seed: int) -> Config:
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": seed})})


def seed_paths(paths: Paths, seed: int) -> Paths:
    """Where seed `seed`'s models and curves go (never over the pipeline's artifacts)."""
    root = paths.models / NAME / f"seed{seed}"
    return dataclasses.replace(paths, models=root, reports=root / "reports")


def _params_digest(cfg: Config, seed: int, paths: Paths | None = None) -> str:
    """The params sections a seed's runs depend on, and the pretrained backbone's bytes (retraining it
    outside the study must start the seed over, like a params change)."""
    models = cfg.seed_study.models
    sections = {name: getattr(seed_config(cfg, seed), name).model_dump(exclude=DIGEST_EXCLUDE.get(name))
                for name in STUDY_SECTIONS if name not in SCORES or name in models}
    if paths is not None:
        for model in (m for m in SCORES if m in models):
            section = getattr(cfg, model)
            weights = paths.backbone_weights(section.backbone, section.pretrained)
            if weights is not None and weights.exists():
                sections[f"{model}/backbone_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fresh_or_resumable(spaths: Paths, digest: str) -> None:
    key_file = spaths.models / "params.sha256"
    if key_file.exists() and key_file.read_text().strip() != digest:
        log.info("%s: params changed since its last run; starting this seed over", spaths.models)
        shutil.rmtree(spaths.models)
    spaths.models.mkdir(parents=True, exist_ok=True)
    key_file.write_text(digest + "\n")


def _check_inputs(cfg: Config, paths: Paths) -> None:
    for model in cfg.seed_study.models:
        section = getattr(cfg, model)
        for attr in MODEL_DATASETS[model]:
            dataset = getattr(section, attr)
            prepared = paths.tuples(dataset) if attr == "dataset" else paths.prepared(dataset) / "captions.parquet"
            if not prepared.exists():
                raise DataError(prepared, f"missing; prepare '{dataset}' first (make seed-study runs the "
                                          "pipeline's fetch and prepare stages)")
        weights = paths.backbone_weights(section.backbone, section.pretrained)
        if weights is not None and not weights.exists():
            raise DataError(weights, "missing; run pretrain_backbone first (make seed-study runs it)")
    if "grn" in cfg.seed_study.models:
        from refexp.training import grn

        for needed in grn.training_files(paths, cfg.grn, "rpn"):
            if not needed.exists():
                raise DataError(needed, "missing; make seed-study runs build_region_benchmark and "
                                        "extract_region_features first")


def _query_hits(model: str, variant: str, seed: int, table: pd.DataFrame, hits) -> pd.DataFrame:
    """One row per test query: its image (the bootstrap resamples images) and whether the variant hit it."""
    return pd.DataFrame({"model": model, "variant": variant, "seed": seed,
                         "image_id": table["image_id"].astype(str).to_numpy(),
                         "region_id": table["region_id"].astype(str).to_numpy(),
                         "expression": table["expression"].astype(str).to_numpy(), "hit": np.asarray(hits, dtype=np.int8)})


def _score_row(model: str, variant: str, seed: int, trained: dict, metrics: dict, eval_seconds: float) -> dict:
    # train_seconds: the engine's time over the whole run, also when this call resumed a finished one.
    row = {"model": model, "variant": variant, "seed": seed, "score": float(metrics[SCORES[model]]),
           "train_seconds": round(float(trained.get("train/seconds", 0.0)), 1), "eval_seconds": round(eval_seconds, 1)}
    prefix = SCORES[model] + "/"
    row.update({key[len(prefix):]: float(v) for key, v in metrics.items() if key.startswith(prefix)})
    return row


def _kind_scores(table: pd.DataFrame, hits) -> dict[str, float]:
    """The score per expression kind (the columns the regression's evaluation gives as test/accuracy/<kind>)."""
    hit = pd.Series(np.asarray(hits, dtype=float), index=table.index)
    kinds = table["kind"].astype("string")
    return {str(k): float(v) for k, v in hit.groupby(kinds, dropna=True).mean().items()}


def _scrc_rows(cfg: Config, spaths: Paths, seed: int) -> tuple[list[dict], list[pd.DataFrame], float]:
    """The SCRC rows and per-query hits of one seed, and the caption pretraining's training seconds."""
    from refexp.training import scrc

    variants = cfg.scrc.variants
    pretrain_seconds = 0.0
    if any(v.transfer for v in variants.values()):
        pretrain_seconds = float(scrc.pretrain(cfg, spaths, progress=False).get("train/seconds", 0.0))
    rows, hits = [], []
    for name in variants:
        trained = scrc.finetune(cfg, spaths, name, progress=False)
        started = time.perf_counter()
        metrics, pred = scrc.evaluate(cfg, spaths, name)
        rows.append(_score_row("scrc", name, seed, trained, metrics, time.perf_counter() - started))
        hits.append(_query_hits("scrc", name, seed, pred, scrc.top1_hits(pred)))
        log.info("seed %d scrc %s: P@1 %.4f", seed, name, rows[-1]["score"])
    return rows, hits, pretrain_seconds


def _regression_rows(cfg: Config, spaths: Paths, seed: int) -> tuple[list[dict], list[pd.DataFrame]]:
    from refexp.metrics.boxes import IOU_THRESHOLD
    from refexp.training.attention_regression import evaluate_variant, train_variant

    section = cfg.attention_regression
    training = cfg.training.merged(section.training)
    rows, hits = [], []
    for name in section.variants:
        trained = train_variant(section, training, name, spaths, seed=seed, deterministic=cfg.run.deterministic,
                                progress=False)
        started = time.perf_counter()
        metrics, table = evaluate_variant(section, name, spaths, seed=seed)
        rows.append(_score_row("attention_regression", name, seed, trained, metrics, time.perf_counter() - started))
        hits.append(_query_hits("attention_regression", name, seed, table, table["iou"] >= IOU_THRESHOLD))
        log.info("seed %d attention_regression %s: accuracy %.4f", seed, name, rows[-1]["score"])
    return rows, hits


def _segmentation_rows(cfg: Config, spaths: Paths, seed: int) -> tuple[list[dict], list[pd.DataFrame]]:
    """One row per (variant, resolution): score prec@0.5, with the overall IoU and prec@0.5 per kind."""
    from refexp.training import text_objseg

    rows, hits = [], []
    for name in cfg.text_objseg.variants:
        for resolution in text_objseg.RESOLUTIONS:  # low first: high resolution starts from it
            trained = text_objseg.train(cfg, spaths, name, resolution, progress=False)
            started = time.perf_counter()
            metrics, table = text_objseg.evaluate(cfg, spaths, name, resolution)
            row_name, hit = f"{name}_{resolution}", table["iou"] >= SEGMENTATION_HIT_IOU
            row = _score_row("text_objseg", row_name, seed, trained, metrics, time.perf_counter() - started)
            row["overall_iou"] = float(metrics["test/overall_iou"])
            row.update({k: v for k, v in _kind_scores(table, hit).items() if k not in row})
            rows.append(row)
            hits.append(_query_hits("text_objseg", row_name, seed, table, hit))
            log.info("seed %d text_objseg %s: prec@0.5 %.4f, overall IoU %.4f", seed, row_name, rows[-1]["score"],
                     rows[-1]["overall_iou"])
    return rows, hits


def _grn_rows(cfg: Config, spaths: Paths, seed: int) -> tuple[list[dict], list[pd.DataFrame]]:
    """One row per GRN-paper variant: score R@10, with the other R@K and the median rank."""
    from refexp.training import grn

    rows, hits = [], []
    for name in cfg.grn.variants:
        trained = grn.train(cfg, spaths, name, progress=False)
        started = time.perf_counter()
        metrics, ranks, _ = grn.evaluate(cfg, spaths, name)
        row = _score_row("grn", name, seed, trained, metrics, time.perf_counter() - started)
        row.update({k.split("/", 1)[1]: float(v) for k, v in metrics.items()
                    if k.startswith("test/recall_at_") or k == "test/median_rank"})
        rows.append(row)
        table = ranks.rename(columns={"query_region_id": "region_id"})
        hits.append(_query_hits("grn", name, seed, table, table["rank"] <= GRN_HIT_RANK))
        log.info("seed %d grn %s: R@10 %.4f, median rank %g", seed, name, rows[-1]["score"], metrics["test/median_rank"])
    return rows, hits


def _run_seed(cfg: Config, paths: Paths, seed: int) -> tuple[list[dict], list[pd.DataFrame], float]:
    """Every variant at one seed: (rows, per-query hits, SCRC caption pretraining seconds). Runs in a
    worker process."""
    import torch

    if not logging.getLogger().handlers:  # a spawned worker starts without the stage's logging setup
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    scfg, spaths = seed_config(cfg, seed), seed_paths(paths, seed)
    _fresh_or_resumable(spaths, _params_digest(cfg, seed, paths))
    rows: list[dict] = []
    hits: list[pd.DataFrame] = []
    pretrain_seconds = 0.0
    if "scrc" in cfg.seed_study.models:
        rows, hits, pretrain_seconds = _scrc_rows(scfg, spaths, seed)
    if "attention_regression" in cfg.seed_study.models:
        more_rows, more_hits = _regression_rows(scfg, spaths, seed)
        rows, hits = rows + more_rows, hits + more_hits
    if "text_objseg" in cfg.seed_study.models:
        more_rows, more_hits = _segmentation_rows(scfg, spaths, seed)
        rows, hits = rows + more_rows, hits + more_hits
    if "grn" in cfg.seed_study.models:
        more_rows, more_hits = _grn_rows(scfg, spaths, seed)
        rows, hits = rows + more_rows, hits + more_hits
    return rows, hits, pretrain_seconds


def run_study(cfg: Config, paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """One row per (model, variant, seed): `score` (SCRC P@1 / regression accuracy / segmentation
    prec@0.5), its per-kind and per-target-size breakdown columns where the evaluation gives them, the
    segmentation rows' `overall_iou` (empty for the other models), training and evaluation seconds;
    one row per (model, variant, seed, test query) with its image and whether it was hit (the per-seed
    checks resample images); and the SCRC caption pretraining's training seconds over all seeds.

    Seeds run in `seed_study.workers` processes (each on training.cpu_threads threads); every run is
    seeded and deterministic, so the scores do not depend on the number of workers."""
    _check_inputs(cfg, paths)
    seeds = cfg.seed_study.seeds
    workers = min(cfg.seed_study.workers, len(seeds))
    if workers == 1:
        results = [_run_seed(cfg, paths, seed) for seed in seeds]
    else:
        # spawn: a forked child would inherit the parent's torch thread pools.
        # die_with_parent: a killed study leaves no seed training on its own.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            results = list(pool.map(_run_seed, [cfg] * len(seeds), [paths] * len(seeds), seeds))
    rows = [row for seed_rows, _, _ in results for row in seed_rows]
    hits = pd.concat([h for _, seed_hits, _ in results for h in seed_hits], ignore_index=True)
    return pd.DataFrame(rows), hits, sum(seconds for _, _, seconds in results)
