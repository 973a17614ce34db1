"""train_vision_text_only_highres: one LSTM-CNN row at high resolution, from its low-resolution model
(the bilinear deconvolution added, full-size labels, loss weights 3:1), as train_text_objseg_highres.

Inputs: as train_vision_text_only_lowres, plus models/vision_text_only_lowres/<variant>/model.pt.
Outputs: models/vision_text_only_highres/<variant>/{checkpoint.pt, model.pt},
         reports/metrics/train_vision_text_only_highres/<variant>.json, reports/plots/.../<variant>.csv.
Params: run, training, text_objseg, vision_text_only.
"""
from __future__ import annotations

from refexp.config import Config
from stages._cli import stage_main
from stages.train_vision_text_only_lowres import run_at

RESOLUTION = "highres"


def run(cfg: Config, item: str) -> dict:
    return run_at(RESOLUTION, cfg, item)


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
