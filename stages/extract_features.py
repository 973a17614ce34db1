"""extract_features: the feature cache of a frozen backbone for one dataset (read by models with
scrc.frozen_backbone: true): pooled features of every annotated box, proposal and whole image.

Inputs: data/prepare_referit/<item>/tuples.parquet (or data/prepare_coco/<item>/captions.parquet:
        whole images only), the images they name, data/raw/<item>/ (proposals).
Outputs: data/extract_features/<item>/{features.npy, index.parquet, meta.json},
         reports/metrics/extract_features/<item>.json.
Params: run.seed, training.cpu_threads, extract_features.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training.features import extract_dataset
from stages._cli import stage_main

STAGE = "extract_features"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = extract_dataset(cfg.extract_features, paths, item, seed=cfg.run.seed, out_dir=paths.stage_dir(STAGE, item))
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
