"""report_data: reports/data.md with counts per split, an expression-length histogram and sample images.

Inputs: data/prepare_referit/<dataset>/tuples.parquet, data/prepare_coco/<dataset>/*.parquet,
        reports/metrics/prepare_referit/<dataset>.json.
Outputs: reports/data.md, reports/figures/data_*.png.
Params: report_data, prepare_referit.datasets, prepare_coco.datasets.
"""
from __future__ import annotations

from refexp.config import Config
from refexp.artifacts import keep_last_good
from refexp.paths import Paths
from refexp.reporting.data_report import build_data_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    # A failed or killed rendering keeps the last good report (the outputs persist in dvc.yaml).
    with keep_last_good(paths.report("data"), paths.figures("data")):
        return build_data_report(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
