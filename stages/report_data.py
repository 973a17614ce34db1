"""report_data: reports/data.md with counts per split, an expression-length histogram and sample images.

Inputs: data/prepare_referit/<dataset>/tuples.parquet, data/prepare_coco/<dataset>/*.parquet,
        reports/metrics/prepare_referit/<dataset>.json.
Outputs: reports/data.md, reports/figures/data_*.png.
Params: report_data, prepare_referit.datasets, prepare_coco.datasets.
"""
from __future__ import annotations

from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.data_report import build_data_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    return build_data_report(cfg, Paths.from_config(cfg))


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
