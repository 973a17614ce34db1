"""report_attention_regression: reports/attention_regression.md beside paper 003's tables.

Inputs: reports/metrics/{train,evaluate}_attention_regression/<variant>.json,
        reports/plots/train_attention_regression/<variant>.csv,
        data/evaluate_attention_regression/<variant>/predictions.parquet,
        data/prepare_referit/<attention_regression.dataset>/tuples.parquet (chance, constant box).
Outputs: reports/attention_regression.md, reports/figures/attention_regression/*.png.
Params: run.seed, training, attention_regression.
"""
from __future__ import annotations

from refexp.config import Config
from refexp.artifacts import keep_last_good
from refexp.paths import Paths
from refexp.reporting.attention_regression import build_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    # A failed or killed rendering keeps the last good report (the outputs persist in dvc.yaml).
    with keep_last_good(paths.report("attention_regression"), paths.figures("attention_regression")):
        return build_report(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
