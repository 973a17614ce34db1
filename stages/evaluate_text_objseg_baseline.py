"""evaluate_text_objseg_baseline: one baseline row of the segmentation paper's Table 1 (a text_objseg.baselines
entry) on the model's test queries.

Inputs: data/prepare_referit/<text_objseg.dataset>/tuples.parquet (test split, masks).
Outputs: reports/metrics/evaluate_text_objseg_baseline/<baseline>.json (test/prec_at_0.5 .. 0.9, test/overall_iou,
         test/mean_iou), data/evaluate_text_objseg_baseline/<baseline>/predictions.parquet (per-query IoU).
Params: text_objseg.dataset, text_objseg.baselines.<baseline>.
"""
from __future__ import annotations

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import text_objseg
from stages._cli import stage_main

STAGE = "evaluate_text_objseg_baseline"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    metrics, table = text_objseg.evaluate_baseline(cfg, paths, item)
    write_parquet(table, paths.stage_dir(STAGE, item) / "predictions.parquet")
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
