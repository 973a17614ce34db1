"""train_vision_text_only_lowres: one LSTM-CNN row of the vision-only/text-only paper at low resolution
(text_objseg's low-res recipe on the variant's dataset, with learned or fixed GloVe embeddings and,
for `synthesized`, the class-name expressions added).

Inputs: data/prepare_{refer,referit}/<dataset>/{tuples.parquet, vocab.txt} and images; with synthesized,
        data/synth_expressions/<vision_text_only.synthesized_dataset>/tuples.parquet; with GloVe, the
        offline GloVe 6B 50-d package (or vision_text_only.glove_file); models/backbone/tiny/backbone.pt.
Outputs: models/vision_text_only_lowres/<variant>/{checkpoint.pt, model.pt},
         reports/metrics/train_vision_text_only_lowres/<variant>.json, reports/plots/.../<variant>.csv.
Params: run, training, text_objseg (image side, model, loss weights, schedules), vision_text_only.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import vision_text_only
from stages._cli import stage_main

RESOLUTION = "lowres"


def run_at(resolution: str, cfg: Config, item: str) -> dict:
    """Both resolutions' stage body (train_vision_text_only_highres calls it too)."""
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # also covers loading the examples, outside the engine
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = vision_text_only.train_lstm_cnn(cfg, paths, item, resolution)
    write_json(paths.metrics(vision_text_only.STAGE[resolution], item), metrics)
    return metrics


def run(cfg: Config, item: str) -> dict:
    return run_at(RESOLUTION, cfg, item)


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
