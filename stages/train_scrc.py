"""train_scrc: one SCRC variant (a scrc.variants entry): transfer from the captioner, fine-tune.

Inputs: data/prepare_referit/<scrc.dataset>/{tuples.parquet, vocab.txt} (train split) and its
        images; models/scrc/pretrained/model.pt (variants with transfer: true).
Outputs: models/scrc/<variant>/{model.pt, checkpoint.pt (resumable)},
         reports/metrics/train_scrc/<variant>.json, reports/plots/train_scrc/<variant>.csv.
Params: run.seed, run.deterministic, training (+ scrc.training, scrc.variants.<variant>.training), scrc.
"""
from __future__ import annotations

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import scrc
from stages._cli import stage_main

STAGE = "train_scrc"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    metrics = scrc.finetune(cfg, paths, item)
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run, trains=True)


if __name__ == "__main__":
    main()
