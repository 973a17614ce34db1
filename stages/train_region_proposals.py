"""train_region_proposals: the GRN paper's DenseCap-style RPN (Sec. 4.2) on the frozen backbone's map, trained
on the training split's corpus regions, with its proposal recall on the test split beside a grid baseline.

Inputs: data/build_region_benchmark/<item>/corpus.parquet and the images it names; models/backbone/tiny/backbone.pt
        for the embedded `tiny` backbone (grn.pretrained).
Outputs: models/region_proposals/<item>/{checkpoint.pt (resumable), model.pt},
         reports/metrics/train_region_proposals/<item>.json (training losses, test/proposal_recall_at_{0.5,0.7}
         beside test/grid_recall_at_*), reports/plots/train_region_proposals/<item>.csv.
Params: run, training (+ grn.rpn.training), grn.{backbone, pretrained, image_size, rpn}.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import region_proposals
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # also covers the backbone pass outside the engine
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = region_proposals.train(cfg, paths, item)
    write_json(paths.metrics(region_proposals.STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
