"""train_text_objseg_baseline: a trained part of the segmentation paper's Table 1 baselines (Sec. 4.1):
`per_word` (the per-word FCN), `grounder` (supervised GroundeR over box proposals) or
`proposal_classifier` (the classifier over segmentation proposals).

Inputs: data/prepare_referit/<text_objseg.dataset>/{tuples.parquet (masks), vocab.txt} (train split) and its
        images and proposals/; data/propose_masks/<text_objseg.dataset>/proposals.parquet (proposal_classifier);
        models/backbone/tiny/backbone.pt for the embedded `tiny` backbone.
Outputs: models/text_objseg_baseline/<part>/ (checkpoint.pt, resumable; model.pt; words.json for per_word),
         reports/metrics/train_text_objseg_baseline/<part>.json, reports/plots/train_text_objseg_baseline/<part>.csv.
Params: run, training (+ text_objseg.<part>.training), text_objseg.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import text_objseg_baselines
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # also covers pooling the proposals, outside the engine
        torch.set_num_threads(cfg.training.cpu_threads)
    metrics = text_objseg_baselines.train(cfg, paths, item)
    write_json(paths.metrics(text_objseg_baselines.TRAIN_STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
