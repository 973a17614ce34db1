"""evaluate_vision_text_only_fused: the category-only row (Eq. 1's p_fg alone) and the full model's row
(Eq. 2) of one dataset with classes, on its evaluation splits and their novel-word subsets.

Inputs: models/vision_text_only_full/<dataset>/model.pt (and the parts it is built from), the dataset's
        prepared tables and images.
Outputs: reports/metrics/evaluate_vision_text_only/<dataset>_{category,full}.json,
         data/evaluate_vision_text_only_fused/<dataset>/{category,full}.parquet.
Params: run.seed, text_objseg, vision_text_only.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import vision_text_only
from stages._cli import stage_main

STAGE = "evaluate_vision_text_only_fused"
METRICS = "evaluate_vision_text_only"  # beside the LSTM-CNN rows: one folder holds every table row


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    summary = {}
    for row, (metrics, table) in vision_text_only.evaluate_fused(cfg, paths, item).items():
        write_parquet(table, paths.stage_dir(STAGE, item) / f"{row}.parquet")
        write_json(paths.metrics(METRICS, f"{item}_{row}"), metrics)
        summary.update({f"{row}/{k}": v for k, v in metrics.items()})
    return summary


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
