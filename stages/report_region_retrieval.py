"""report_region_retrieval: reports/region_retrieval.md, the GRN paper's Tables 2-5 beside ours, its claims
with intervals resampled by query image, the benchmark's sizes, retrieval figures and training curves.

Inputs: reports/metrics/{build_region_benchmark,train_region_proposals,train_grn,evaluate_grn}/,
        data/evaluate_grn/<variant>/{ranks,top}.parquet, the benchmark's corpus.parquet and images (figures).
Outputs: reports/region_retrieval.md, reports/figures/region_retrieval/.
Params: run.seed, datasets, training, build_region_benchmark, grn, seed_study.models.
"""
from __future__ import annotations

from refexp.artifacts import keep_last_good
from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.grn import REPORT, build_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    with keep_last_good(paths.report(REPORT), paths.figures(REPORT)):
        return build_report(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
