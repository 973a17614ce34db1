"""train_attention_regression: train one variant of paper 003's attention box regression.

Inputs: data/prepare_referit/<attention_regression.dataset>/{tuples.parquet, vocab.txt} (train split)
        and the images it names (image-using variants).
Outputs: models/attention_regression/<variant>/checkpoint.pt (resumable),
         reports/metrics/train_attention_regression/<variant>.json,
         reports/plots/train_attention_regression/<variant>.csv (training curve).
Params: run.seed, run.deterministic, training (+ attention_regression.training overrides), attention_regression.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training.attention_regression import train_variant
from stages._cli import stage_main

STAGE = "train_attention_regression"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # also covers feature caching and evaluation, outside the engine
        torch.set_num_threads(cfg.training.cpu_threads)
    section = cfg.attention_regression
    metrics = train_variant(section, cfg.training.merged(section.training), item, paths, seed=cfg.run.seed,
                            deterministic=cfg.run.deterministic, stage=STAGE)
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
