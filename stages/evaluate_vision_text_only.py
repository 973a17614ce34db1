"""evaluate_vision_text_only: mask metrics of one LSTM-CNN row (high resolution) on its dataset's
evaluation splits, and on their novel-word subsets.

Inputs: models/vision_text_only_highres/<variant>/model.pt, the dataset's prepared tables and images.
Outputs: reports/metrics/evaluate_vision_text_only/<variant>.json (<split>/prec_at_0.5 .. 0.9,
         <split>/overall_iou, <split>/mean_iou, <split>/novel_words/...), data/evaluate_vision_text_only/
         <variant>/queries.parquet (per-query IoU, for intervals resampled by image).
Params: run.seed, text_objseg, vision_text_only.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import vision_text_only
from stages._cli import stage_main

STAGE = "evaluate_vision_text_only"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics, table = vision_text_only.evaluate_lstm_cnn(cfg, paths, item)
    write_parquet(table, paths.stage_dir(STAGE, item) / "queries.parquet")
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
