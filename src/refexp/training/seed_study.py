"""The training-seed study: every variant retrained and re-evaluated at several seeds.

The reports' paired-bootstrap intervals (refexp.metrics.bootstrap) say how far the test sample alone
could move a gap between two variants, for the one pipeline seed. Whether a paper's order survives a
different initialisation, data order or scarce-data subset is a question about training seeds: this
module trains each variant of `seed_study.models` at each of `seed_study.seeds` with the pipeline's own
training code and params (only run.seed changes) and returns one row per (model, variant, seed). For the
segmentation model each (variant, resolution) is a row, `<variant>_lowres` and `<variant>_highres`, the
high-resolution model trained from the same seed's low-resolution one, as in the pipeline. For the
vision-only/text-only paper (vision_text_only) each LSTM-CNN variant is a row (low, then high resolution:
the row is the high-resolution model, as in the paper's tables), and per dataset of `vision_text_only.full` the
category-only and full models are rows `<dataset>_category` and `<dataset>_full` (the category FCN trained
once per seed, the expression classifier and the full model per dataset), each scored on its dataset's
first evaluation split.

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
from pathlib import Path

import numpy as np
import pandas as pd

from refexp.config import Config
from refexp.data.skips import DataError
from refexp.paths import Paths
from refexp.processes import die_with_parent

log = logging.getLogger(__name__)

NAME = "seed_study"
# Params sections that decide what a seed's run computes (a change restarts that seed). A model's own
# section counts only while the model is in `seed_study.models`, or one that reads it (SHARED_SECTIONS).
STUDY_SECTIONS = ("training", "scrc", "attention_regression", "text_objseg", "grn", "vision_text_only", "run",
                  "pretrain_backbone")
# The evaluation metric the study keeps as each variant's `score`, per model ({split}: the first of the
# variant's dataset's vision_text_only eval_splits, G-Ref's val).
SCORES = {"scrc": "test/p_at_1", "attention_regression": "test/accuracy", "text_objseg": "test/prec_at_0.5",
          "grn": "test/recall_at_10", "vision_text_only": "{split}/prec_at_0.5"}
# grn: the benchmark and its region maps; vision_text_only: its datasets, synthesized and COCO tables (below).
MODEL_DATASETS = {"scrc": ("dataset", "caption_dataset"), "attention_regression": ("dataset",),
                  "text_objseg": ("dataset",), "grn": (), "vision_text_only": ()}
# Another model's section that a model's runs read, and the keys of it they never read: vision_text_only
# takes text_objseg's image side, model sizes, loss weights and schedules, not its dataset or variants.
SHARED_SECTIONS = {"vision_text_only": {"text_objseg": {"dataset", "train_split", "variants"}}}
# The section whose backbone a model trains on (its own unless named here).
BACKBONE_SECTION = {"vision_text_only": "text_objseg"}
# Keys of a model's section that the study's runs never read (the report's figures, the segmentation
# baselines, which are deterministic or trained apart): a change of them restarts no seed. Names not (yet)
# in the section are ignored.
DIGEST_EXCLUDE = {"text_objseg": {"figure_examples", "baselines", "per_word", "grounder", "proposal_classifier",
                                  "mask_proposals", "n_box_proposals", "scrc_variant", "grabcut_iterations",
                                  "stuff_words"},
                  "grn": {"figure_examples", "eval_chunk"},
                  "vision_text_only": {"figure_examples"}}
# A retrieval query is hit when a target is among the top GRN_HIT_RANK (the GRN paper's headline R@10).
GRN_HIT_RANK = 10
# A segmentation query is hit when its mask IoU reaches this (the paper's prec@0.5, the study's score).
SEGMENTATION_HIT_IOU = 0.5


def study_datasets(cfg: Config) -> list[str]:
    """The `datasets` entries a study of `seed_study.models` reads, in model order."""
    out: list[str] = []
    for model in cfg.seed_study.models:
        section = getattr(cfg, model)
        if model == "vision_text_only":
            out += [v.dataset for v in section.variants.values()]
            if section.full or any(v.synthesized for v in section.variants.values()):
                out.append(section.synthesized_dataset)
        else:
            out += [getattr(section, attr) for attr in MODEL_DATASETS[model] or ("dataset",)]
    return list(dict.fromkeys(out))


def seed_config(cfg: Config, seed: int) -> Config:
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": seed})})


def seed_paths(paths: Paths, seed: int) -> Paths:
    """Where seed `seed`'s models and curves go (never over the pipeline's artifacts)."""
    root = paths.models / NAME / f"seed{seed}"
    return dataclasses.replace(paths, models=root, reports=root / "reports")


def _digest_excludes(models: list[str]) -> dict[str, set[str]]:
    """The sections a study of `models` depends on, each with the keys that do not count: the shared
    sections, every studied model's own, and another model's that a studied one reads (less the keys
    that no reader reads)."""
    out: dict[str, set[str]] = {}
    for name in STUDY_SECTIONS:
        if name not in SCORES or name in models:
            out[name] = set(DIGEST_EXCLUDE.get(name, ()))
            continue
        unread = [SHARED_SECTIONS[m][name] for m in models if name in SHARED_SECTIONS.get(m, {})]
        if unread:
            out[name] = set(DIGEST_EXCLUDE.get(name, ())) | set.intersection(*map(set, unread))
    return out


def _backbone_section(cfg: Config, model: str):
    return getattr(cfg, BACKBONE_SECTION.get(model, model))


def score_key(cfg: Config, model: str, dataset: str | None = None) -> str:
    """The metric kept as `score` (vision_text_only: prec@0.5 on the first eval split of `dataset`)."""
    split = cfg.vision_text_only.datasets[dataset].eval_splits[0] if model == "vision_text_only" else None
    return SCORES[model].format(split=split)


def _params_digest(cfg: Config, seed: int, paths: Paths | None = None) -> str:
    """The params sections a seed's runs depend on, and the pretrained backbone's bytes (retraining it
    outside the study must start the seed over, like a params change)."""
    models = cfg.seed_study.models
    scfg = seed_config(cfg, seed)
    sections = {name: getattr(scfg, name).model_dump(exclude=exclude or None)
                for name, exclude in _digest_excludes(models).items()}
    if paths is not None:
        for model in (m for m in SCORES if m in models):
            section = _backbone_section(cfg, model)
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


def _vision_text_only_inputs(cfg: Config, paths: Paths) -> list[tuple[Path, str]]:
    """(file, what makes it) for each table the vision_text_only runs read."""
    v = cfg.vision_text_only
    datasets = list(dict.fromkeys(x.dataset for x in v.variants.values()))
    needed = [(paths.tuples(d), f"prepare '{d}' (prepare_{dict(paths.formats)[d]})") for d in datasets]
    if any(x.synthesized for x in v.variants.values()):
        needed.append((paths.stage_dir("synth_expressions", v.synthesized_dataset) / "tuples.parquet",
                       f"synth_expressions {v.synthesized_dataset}"))
    # The classes: the category branch, and the GloVe vocabulary of a dataset with classes.
    if v.full or any(x.embedding == "glove" and v.datasets[x.dataset].classes for x in v.variants.values()):
        needed.append((paths.prepared(v.synthesized_dataset) / "instances.parquet",
                       f"prepare_coco {v.synthesized_dataset}"))
    return needed


def _check_inputs(cfg: Config, paths: Paths) -> None:
    for model in cfg.seed_study.models:
        section = getattr(cfg, model)
        for attr in MODEL_DATASETS[model]:
            dataset = getattr(section, attr)
            prepared = paths.tuples(dataset) if attr == "dataset" else paths.prepared(dataset) / "captions.parquet"
            if not prepared.exists():
                raise DataError(prepared, f"missing; prepare '{dataset}' first (make seed-study runs the "
                                          "pipeline's fetch and prepare stages)")
        section = _backbone_section(cfg, model)
        weights = paths.backbone_weights(section.backbone, section.pretrained)
        if weights is not None and not weights.exists():
            raise DataError(weights, "missing; run pretrain_backbone first (make seed-study runs it)")
    if "grn" in cfg.seed_study.models:
        from refexp.training import grn

        for needed in grn.training_files(paths, cfg.grn, "rpn"):
            if not needed.exists():
                raise DataError(needed, "missing; make seed-study runs build_region_benchmark and "
                                        "extract_region_features first")
    if "vision_text_only" in cfg.seed_study.models:
        for needed, stage in _vision_text_only_inputs(cfg, paths):
            if not needed.exists():
                raise DataError(needed, f"missing; run {stage} first (make seed-study runs prepare_refer, "
                                        "prepare_coco and synth_expressions)")


def _query_hits(model: str, variant: str, seed: int, table: pd.DataFrame, hits) -> pd.DataFrame:
    """One row per test query: its image (the bootstrap resamples images) and whether the variant hit it."""
    return pd.DataFrame({"model": model, "variant": variant, "seed": seed,
                         "image_id": table["image_id"].astype(str).to_numpy(),
                         "region_id": table["region_id"].astype(str).to_numpy(),
                         "expression": table["expression"].astype(str).to_numpy(), "hit": np.asarray(hits, dtype=np.int8)})


def _score_row(model: str, variant: str, seed: int, trained: dict, metrics: dict, eval_seconds: float,
               key: str | None = None) -> dict:
    # train_seconds: the engine's time over the whole run, also when this call resumed a finished one.
    key = key or SCORES[model]
    row = {"model": model, "variant": variant, "seed": seed, "score": float(metrics[key]),
           "train_seconds": round(float(trained.get("train/seconds", 0.0)), 1), "eval_seconds": round(eval_seconds, 1)}
    prefix = key + "/"
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


def _vision_text_only_row(cfg: Config, seed: int, row_name: str, dataset: str, train_seconds: float,
                          evaluated: tuple[dict, pd.DataFrame], eval_seconds: float) -> tuple[dict, pd.DataFrame]:
    """The row and hits of one of the paper's rows, on the first eval split of its dataset: score
    prec@0.5, with the overall IoU and prec@0.5 of the novel-word subset (the evaluation expressions with a
    word no training expression has)."""
    metrics, table = evaluated
    split = cfg.vision_text_only.datasets[dataset].eval_splits[0]
    row = _score_row("vision_text_only", row_name, seed, {"train/seconds": train_seconds}, metrics, eval_seconds,
                     score_key(cfg, "vision_text_only", dataset))
    row["overall_iou"] = float(metrics[f"{split}/overall_iou"])
    row["novel_words"] = float(metrics.get(f"{split}/novel_words/prec_at_0.5", np.nan))
    queries = table[table["split"] == split].reset_index(drop=True)
    log.info("seed %d vision_text_only %s: %s prec@0.5 %.4f, overall IoU %.4f", seed, row_name, split, row["score"],
             row["overall_iou"])
    return row, _query_hits("vision_text_only", row_name, seed, queries, queries["iou"] >= SEGMENTATION_HIT_IOU)


def _vision_text_only_rows(cfg: Config, spaths: Paths, seed: int) -> tuple[list[dict], list[pd.DataFrame]]:
    """The vision-only/text-only paper's rows of one seed: each LSTM-CNN variant (low resolution, then
    high resolution from it; its row is the high-resolution model), then per dataset of
    `vision_text_only.full` the category-only row and the full model's row."""
    from refexp.training import vision_text_only as vto

    section = cfg.vision_text_only
    rows, hits = [], []
    for name, v in section.variants.items():
        seconds = sum(float(vto.train_lstm_cnn(cfg, spaths, name, resolution, progress=False).get("train/seconds", 0.0))
                      for resolution in ("lowres", "highres"))  # in this order: high starts from low
        started = time.perf_counter()
        evaluated = vto.evaluate_lstm_cnn(cfg, spaths, name)
        row, hit = _vision_text_only_row(cfg, seed, name, v.dataset, seconds, evaluated, time.perf_counter() - started)
        rows.append(row)
        hits.append(hit)
    if not section.full:
        return rows, hits
    # The category FCN is trained once per seed (on COCO): its seconds count with the first category row.
    fcn_seconds = float(vto.train_category_fcn(cfg, spaths, progress=False).get("train/seconds", 0.0))
    for dataset in section.full:
        classifier = vto.train_expression_classifier(cfg, spaths, dataset, progress=False).get("train/seconds", 0.0)
        full = float(vto.train_full(cfg, spaths, dataset, progress=False).get("train/seconds", 0.0))
        started = time.perf_counter()
        evaluated = vto.evaluate_fused(cfg, spaths, dataset)
        each = (time.perf_counter() - started) / len(evaluated)  # one call evaluates both rows
        for part, seconds in ((vto.CATEGORY_ROW, fcn_seconds + float(classifier)), (vto.FULL_ROW, full)):
            row, hit = _vision_text_only_row(cfg, seed, f"{dataset}_{part}", dataset, seconds, evaluated[part], each)
            rows.append(row)
            hits.append(hit)
        fcn_seconds = 0.0
    return rows, hits


# The models in the order their rows are listed, and the longest to train first when work is handed out.
MODEL_ORDER = ("scrc", "attention_regression", "text_objseg", "grn", "vision_text_only")
LONGEST_FIRST = ("vision_text_only", "grn", "scrc", "text_objseg", "attention_regression")


def _run_unit(cfg: Config, paths: Paths, seed: int, model: str) -> tuple[list[dict], list[pd.DataFrame], float]:
    """One model's variants at one seed: (rows, per-query hits, SCRC caption pretraining seconds). Runs in a
    worker process; the seed's folder was made ready (_fresh_or_resumable) before any unit started."""
    import torch

    if not logging.getLogger().handlers:  # a spawned worker starts without the stage's logging setup
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    scfg, spaths = seed_config(cfg, seed), seed_paths(paths, seed)
    if model == "scrc":
        return _scrc_rows(scfg, spaths, seed)
    runner = {"attention_regression": _regression_rows, "text_objseg": _segmentation_rows, "grn": _grn_rows,
              "vision_text_only": _vision_text_only_rows}[model]
    rows, hits = runner(scfg, spaths, seed)
    return rows, hits, 0.0


def run_study(cfg: Config, paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """One row per (model, variant, seed): `score` (SCRC P@1 / regression accuracy / segmentation
    prec@0.5 / GRN R@10 / vision_text_only prec@0.5 on the dataset's first eval split), its per-kind and
    per-target-size breakdown columns where the evaluation gives them, the segmentation rows'
    `overall_iou` (empty for the other models), vision_text_only's `novel_words` prec@0.5, training and
    evaluation seconds;
    one row per (model, variant, seed, test query) with its image and whether it was hit (the per-seed
    checks resample images); and the SCRC caption pretraining's training seconds over all seeds.

    Each (seed, model) runs in one of `seed_study.workers` processes (each on training.cpu_threads threads),
    the longest models first; every run is seeded and deterministic, so the scores do not depend on the
    number of workers or the order."""
    _check_inputs(cfg, paths)
    seeds = cfg.seed_study.seeds
    for seed in seeds:  # before any unit starts: a seed whose params changed is cleared once, here
        _fresh_or_resumable(seed_paths(paths, seed), _params_digest(cfg, seed, paths))
    # One unit per (seed, model), so that the workers stay busy to the end; the rows come out by seed, then model.
    units = [(seed, model) for seed in seeds for model in MODEL_ORDER if model in cfg.seed_study.models]
    dispatch = sorted(units, key=lambda unit: LONGEST_FIRST.index(unit[1]))
    workers = min(cfg.seed_study.workers, len(units))
    if workers == 1:
        done = [_run_unit(cfg, paths, seed, model) for seed, model in dispatch]
    else:
        # spawn: a forked child would inherit the parent's torch thread pools.
        # die_with_parent: a killed study leaves no seed training on its own.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            done = list(pool.map(_run_unit, [cfg] * len(dispatch), [paths] * len(dispatch),
                                 [seed for seed, _ in dispatch], [model for _, model in dispatch]))
    by_unit = dict(zip(dispatch, done))
    results = [by_unit[unit] for unit in units]
    rows = [row for unit_rows, _, _ in results for row in unit_rows]
    hits = pd.concat([h for _, unit_hits, _ in results for h in unit_hits], ignore_index=True)
    return pd.DataFrame(rows), hits, sum(seconds for _, _, seconds in results)
