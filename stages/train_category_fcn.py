"""train_category_fcn: the category-based segmentation FCN of the vision-only/text-only paper (Sec. 2.3),
trained once on COCO train instance masks as semantic segmentation (M classes + background) on the
fixed conv body; every full-model and category-only row shares it.

Inputs: data/prepare_coco/<vision_text_only.synthesized_dataset>/instances.parquet and its train2014
        images; models/backbone/tiny/backbone.pt.
Outputs: models/category_fcn/coco/{checkpoint.pt, model.pt}, reports/metrics/train_category_fcn.json,
         reports/plots/train_category_fcn/coco.csv.
Params: run, training, text_objseg (image side), vision_text_only.category.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import vision_text_only
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = vision_text_only.train_category_fcn(cfg, paths)
    write_json(paths.metrics(vision_text_only.STAGE["category_fcn"]), metrics)
    return metrics


def main() -> None:
    stage_main(run, takes_item=False, trains=True)


if __name__ == "__main__":
    main()
