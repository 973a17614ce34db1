"""train_expression_classifier: the LSTM expression classifier of the vision-only/text-only paper
(Sec. 2.3: a two-layer MLP on the final hidden state gives p_text over the M classes), on one dataset's
train split category labels, with fixed GloVe embeddings; shared by that dataset's full and
category-only rows.

Inputs: data/prepare_refer/<dataset>/{tuples.parquet, vocab.txt}; data/prepare_coco/<synthesized_dataset>/
        instances.parquet (the class list); the offline GloVe package (or vision_text_only.glove_file).
Outputs: models/expression_classifier/<dataset>/{checkpoint.pt, model.pt},
         reports/metrics/train_expression_classifier/<dataset>.json, reports/plots/.../<dataset>.csv.
Params: run, training, text_objseg.model.max_tokens, vision_text_only.
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
    metrics = vision_text_only.train_expression_classifier(cfg, paths, item)
    write_json(paths.metrics(vision_text_only.STAGE["classifier"], item), metrics)
    return metrics


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
