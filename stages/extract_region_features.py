"""extract_region_features: one pass of the GRN paper's frozen backbone over every corpus image (Sec. 3.1):
roi_align features (C x k x k) of every corpus region and of the trained RPN's proposals.

Inputs: data/build_region_benchmark/<item>/corpus.parquet and its images; models/region_proposals/<item>/model.pt;
        models/backbone/tiny/backbone.pt for the embedded `tiny` backbone.
Outputs: data/extract_region_features/<item>/{regions.pt, proposals.parquet, proposals.pt} (formats in
         refexp.training.region_features), reports/metrics/extract_region_features/<item>.json.
Params: run.seed (a random backbone's weights), training.cpu_threads,
        grn.{backbone, pretrained, image_size, region_map_size, train_positive_iou, rpn}.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import region_features, region_proposals
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    proposer = region_proposals.load_trained(cfg, paths, item)
    metrics = region_features.extract(cfg.grn, paths, item, proposer, cfg.run.seed)
    write_json(paths.metrics(region_features.STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
