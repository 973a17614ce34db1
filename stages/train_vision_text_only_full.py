"""train_vision_text_only_full: the full model of the vision-only/text-only paper (Eq. 2) for one
dataset: the LSTM-CNN of vision_text_only.full.<dataset> (word embedding + synthesized expressions)
and the category branch fused by a learned alpha in (0, 1), trained end to end.

Inputs: models/vision_text_only_highres/<init>/model.pt, models/category_fcn/coco/model.pt,
        models/expression_classifier/<dataset>/model.pt, and that variant's training data.
Outputs: models/vision_text_only_full/<dataset>/{checkpoint.pt, model.pt},
         reports/metrics/train_vision_text_only_full/<dataset>.json (with the learned alpha),
         reports/plots/train_vision_text_only_full/<dataset>.csv.
Params: run, training, text_objseg, vision_text_only.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import vision_text_only
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = vision_text_only.train_full(cfg, paths, item)
    write_json(paths.metrics(vision_text_only.STAGE["full"], item), metrics)
    return metrics


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
