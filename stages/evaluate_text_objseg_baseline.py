"""evaluate_text_objseg_baseline: one baseline row of the segmentation paper's Table 1 (a text_objseg.baselines
entry) on the model's test queries.

Inputs: data/prepare_referit/<text_objseg.dataset>/tuples.parquet (test split, masks) and its images and proposals/;
        the trained parts: models/text_objseg_baseline/<part>/model.pt, models/scrc/<text_objseg.scrc_variant>/model.pt;
        data/propose_masks/<text_objseg.dataset>/proposals.parquet.
Outputs: reports/metrics/evaluate_text_objseg_baseline/<baseline>.json (test/prec_at_0.5 .. 0.9, test/overall_iou,
         test/mean_iou), data/evaluate_text_objseg_baseline/<baseline>/predictions.parquet (per-query IoU).
Params: run.seed, scrc (its model), text_objseg.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import text_objseg_baselines
from stages._cli import stage_main

STAGE = "evaluate_text_objseg_baseline"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # the threads evaluate_text_objseg times ours with
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics, table = text_objseg_baselines.evaluate(cfg, paths, item)
    write_parquet(table, paths.stage_dir(STAGE, item) / "predictions.parquet")
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
