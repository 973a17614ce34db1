"""train_grn: train one retrieval variant of the GRN paper (a row of its Tables 2-5) on cached region maps.

Inputs: data/build_region_benchmark/<grn.dataset>/{corpus,queries}.parquet (train split),
        data/extract_region_features/<grn.dataset>/regions.pt (+ proposals.{parquet,pt} in the RPN setting).
Outputs: models/grn/<variant>/{checkpoint.pt (resumable), model.pt}, reports/metrics/train_grn/<variant>.json,
         reports/plots/train_grn/<variant>.csv (training curve).
Params: run.seed, run.deterministic, training (+ grn.training overrides), grn.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import grn
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = grn.train(cfg, paths, item)
    write_json(paths.metrics(grn.TRAIN_STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
