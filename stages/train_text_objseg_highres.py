"""train_text_objseg_highres: one variant of the segmentation paper's model at high resolution: from the low-resolution model, the bilinear deconvolution added, full-size labels, loss weights 3:1.

Inputs: data/prepare_referit/<text_objseg.dataset>/{tuples.parquet (masks), vocab.txt} (train split) and its
        images;
        models/text_objseg_lowres/<variant>/checkpoint.pt (the initialisation); models/backbone/tiny/backbone.pt for the embedded `tiny` backbone.
Outputs: models/text_objseg_highres/<variant>/checkpoint.pt (resumable), reports/metrics/train_text_objseg_highres/<variant>.json,
         reports/plots/train_text_objseg_highres/<variant>.csv.
Params: run, training (+ text_objseg.highres_training), text_objseg.
"""
from __future__ import annotations

from refexp.config import Config
from stages._cli import stage_main
from stages.train_text_objseg_lowres import run_at

RESOLUTION = "highres"


def run(cfg: Config, item: str) -> dict:
    return run_at(RESOLUTION, cfg, item)


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
