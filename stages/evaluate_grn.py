"""evaluate_grn: rank the whole test corpus for every test query with one trained GRN-paper variant.

Inputs: models/grn/<variant>/model.pt, the benchmark tables and region maps train_grn reads (test split).
Outputs: reports/metrics/evaluate_grn/<variant>.json (test/recall_at_K, test/median_rank, counts, ms/query),
         data/evaluate_grn/<variant>/{ranks.parquet (per-query pessimistic rank, for intervals resampled by
         query image), top.parquet (each query's top results, hits marked, for the figures)}.
Params: run.seed, grn.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import grn
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics, ranks, top = grn.evaluate(cfg, paths, item)
    write_parquet(ranks, paths.stage_dir(grn.EVAL_STAGE, item) / "ranks.parquet")
    write_parquet(top, paths.stage_dir(grn.EVAL_STAGE, item) / "top.parquet")
    write_json(paths.metrics(grn.EVAL_STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
