"""report_text_objseg: reports/segmentation.md, the segmentation paper's Tables 1-2 beside ours, claims with
intervals, examples and training curves.

Inputs: reports/metrics/{train_text_objseg_*,evaluate_text_objseg}/, data/evaluate_text_objseg/<variant>/*.parquet,
        the trained high-resolution model (for the example figure).
Outputs: reports/segmentation.md, reports/figures/segmentation/.
Params: run.seed, datasets, training, pretrain_backbone, text_objseg.
"""
from __future__ import annotations

from refexp.artifacts import keep_last_good
from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.text_objseg import REPORT, build_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    # A failed or killed rendering keeps the last good report (the outputs persist in dvc.yaml).
    with keep_last_good(paths.report(REPORT), paths.figures(REPORT)):
        return build_report(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
