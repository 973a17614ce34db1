"""report_scrc: reports/scrc.md, the paper's Tables 1-2 beside ours, with figures and curves.

Inputs: reports/metrics/{pretrain_scrc,train_scrc,evaluate_scrc}/*.json,
        reports/plots/{pretrain_scrc,train_scrc}/*.csv, data/evaluate_scrc/scrc_full/predictions.parquet
        and the images it names.
Outputs: reports/scrc.md, reports/figures/scrc/.
Params: datasets, training, scrc.
"""
from __future__ import annotations

from refexp.config import Config
from refexp.artifacts import keep_last_good
from refexp.paths import Paths
from refexp.reporting.scrc_report import build_scrc_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    # A failed or killed rendering keeps the last good report (the outputs persist in dvc.yaml).
    with keep_last_good(paths.report("scrc"), paths.figures("scrc")):
        return build_scrc_report(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
