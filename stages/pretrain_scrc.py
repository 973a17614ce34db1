"""pretrain_scrc: caption pretraining of SCRC as LRCN (W_local = 0), the paper's Sec. 3.2.

Inputs: data/prepare_coco/<scrc.caption_dataset>/{captions.parquet, vocab.txt} (train split) and
        its images; data/prepare_referit/<scrc.dataset>/vocab.txt (joint vocabulary).
Outputs: models/scrc/pretrained/{model.pt, checkpoint.pt (resumable)},
         reports/metrics/pretrain_scrc/pretrained.json, reports/plots/pretrain_scrc/pretrained.csv.
Params: run.seed, run.deterministic, training (+ scrc.pretrain_training), scrc.
"""
from __future__ import annotations

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import scrc
from stages._cli import stage_main

STAGE = "pretrain_scrc"


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    metrics = scrc.pretrain(cfg, paths)
    write_json(paths.metrics(STAGE, scrc.PRETRAINED), metrics)
    return metrics


def main() -> None:
    stage_main(run, takes_item=False, trains=True)


if __name__ == "__main__":
    main()
