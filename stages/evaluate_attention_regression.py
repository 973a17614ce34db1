"""evaluate_attention_regression: test accuracy of one trained attention-regression variant.

Inputs: models/attention_regression/<variant>/checkpoint.pt,
        data/prepare_referit/<attention_regression.dataset>/{tuples.parquet, vocab.txt} (test split) and images.
Outputs: reports/metrics/evaluate_attention_regression/<variant>.json (test/accuracy, per kind, ms/query),
         data/evaluate_attention_regression/<variant>/predictions.parquet (boxes, IoU, attention maps).
Params: run.seed, attention_regression.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training.attention_regression import evaluate_variant
from stages._cli import stage_main

STAGE = "evaluate_attention_regression"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # also covers feature caching and evaluation, outside the engine
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics, predictions = evaluate_variant(cfg.attention_regression, item, paths, seed=cfg.run.seed, stage=STAGE)
    write_parquet(predictions, paths.stage_dir(STAGE, item) / "predictions.parquet")
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
