"""seed_study: every variant of the models in seed_study.models (scrc, attention_regression,
text_objseg at low and high resolution, grn, vision_text_only with its category and full rows) retrained
at each of seed_study.seeds (not in the embedded DAG: it costs the training time of the whole pipeline
once per seed). Run it with `make seed-study`, which reproduces the pipeline's prepared data first.

Inputs: data/prepare_referit/<dataset>/{tuples.parquet, vocab.txt}, data/prepare_coco/<caption_dataset>
        (SCRC caption pretraining), data/build_region_benchmark + extract_region_features (grn),
        data/prepare_refer/<dataset>, data/synth_expressions/<synthesized_dataset>/tuples.parquet and
        data/prepare_coco/<synthesized_dataset>/instances.parquet (vision_text_only), models/backbone/
        (pretrain_backbone), and the images they name.
Outputs: reports/metrics/seed_study.json, reports/seed_study.md, reports/seed_study/scores.csv,
         reports/figures/seed_study/scores.png, models/seed_study/seed<k>/...
Params: seed_study, run, training, pretrain_backbone, scrc, attention_regression, text_objseg, grn,
        vision_text_only.
"""
from __future__ import annotations

import time

import torch

from refexp.artifacts import atomic_path, write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.seed_study import summarise, write_report
from refexp.training.seed_study import NAME, run_study
from stages._cli import stage_main

COMMAND = "make seed-study"


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    started = time.perf_counter()
    scores, hits, pretrain_seconds = run_study(cfg, paths)
    metrics, claim_tables = summarise(scores, cfg, hits)
    wall = time.perf_counter() - started
    metrics["seconds"] = round(wall, 1)  # this invocation (resumed runs are quick)
    with atomic_path(paths.reports / NAME / "scores.csv") as tmp:
        scores.to_csv(tmp, index=False, float_format="%.6f")
    write_json(paths.reports / "metrics" / f"{NAME}.json", metrics)
    write_report(cfg, scores, claim_tables, paths.report(NAME), paths.figures(NAME) / "scores.png", COMMAND,
                 pretrain_seconds, wall)
    return metrics


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
