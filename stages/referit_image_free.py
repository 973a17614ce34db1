"""referit_image_free: the real image-free ReferIt experiment (not in the embedded DAG: it needs
../shared/data/referit). Run it with `make referit-image-free`, which fetches and prepares the
real annotations first.

Inputs: data/prepare_referit/<referit_image_free.dataset>/{tuples.parquet, vocab.txt} (real train/test).
Outputs: reports/metrics/referit_image_free.json, reports/referit_image_free.md,
         reports/figures/referit_image_free/curves.png, models/referit_image_free/...
Params: run, training, referit_image_free, attention_regression (the text-only variant), scrc (the
        image-free variant), datasets.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.referit_image_free import write_report
from refexp.training.referit_image_free import NAME, run_experiment, run_settings
from stages._cli import stage_main

COMMAND = "make referit-image-free"


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics, _ = run_experiment(cfg, paths)
    write_json(paths.reports / "metrics" / f"{NAME}.json", metrics)
    write_report(cfg, metrics, run_settings(cfg, paths), paths.report(NAME), paths.figures(NAME), COMMAND)
    return metrics


def main() -> None:
    stage_main(run, takes_item=False, trains=True)


if __name__ == "__main__":
    main()
