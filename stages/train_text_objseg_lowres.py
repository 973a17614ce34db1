"""train_text_objseg_lowres: one variant of the segmentation paper's model at low resolution: no deconvolution, labels on the w x h map (any pixel positive), loss weights 1:1.

Inputs: data/prepare_referit/<text_objseg.dataset>/{tuples.parquet (masks), vocab.txt} (train split) and its
        images; models/backbone/tiny/backbone.pt for the embedded `tiny` backbone.
Outputs: models/text_objseg_lowres/<variant>/checkpoint.pt (resumable), reports/metrics/train_text_objseg_lowres/<variant>.json,
         reports/plots/train_text_objseg_lowres/<variant>.csv.
Params: run, training (+ text_objseg.lowres_training), text_objseg.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import text_objseg
from stages._cli import stage_main

RESOLUTION = "lowres"


def run_at(resolution: str, cfg: Config, item: str) -> dict:
    """Both resolutions' stage body (train_text_objseg_highres calls it too)."""
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # also covers loading the examples, outside the engine
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = text_objseg.train(cfg, paths, item, resolution)
    write_json(paths.metrics(text_objseg.STAGE[resolution], item), metrics)
    return metrics


def run(cfg: Config, item: str) -> dict:
    return run_at(RESOLUTION, cfg, item)


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
