"""pretrain_backbone: the embedded default's ImageNet stand-in. The `tiny` CNN learns each pixel's
category and colour on the COCO train2014 images; `pretrained: true` then means this checkpoint.

Inputs: data/prepare_coco/<pretrain_backbone.dataset>/instances.parquet (train2014 images and masks).
Outputs: models/backbone/<backbone>/{backbone.pt, checkpoint.pt (resumable)},
         reports/metrics/pretrain_backbone/<backbone>.json (held-out and val2014 accuracy),
         reports/plots/pretrain_backbone/<backbone>.csv (training curve).
Params: run.seed, run.deterministic, training (+ pretrain_backbone.training), pretrain_backbone.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training.backbone import STAGE, pretrain
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # also covers the evaluation, outside the engine
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = pretrain(cfg, paths)
    write_json(paths.metrics(STAGE, cfg.pretrain_backbone.backbone), metrics)
    return metrics


def main() -> None:
    stage_main(run, takes_item=False, trains=True)


if __name__ == "__main__":
    main()
