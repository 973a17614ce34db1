"""evaluate_scrc: one SCRC variant on the test split: P@1 over each image's annotated boxes,
R@1 / R@10 / oracle R@100 over proposals (EdgeBox files of the raw layout, else jittered
annotated boxes), per expression kind, summed and length-normalised log-likelihood.

Inputs: data/prepare_referit/<scrc.dataset>/{tuples.parquet, vocab.txt} and its images,
        data/raw/<scrc.dataset>/ (proposals), models/scrc/<variant>/model.pt.
Outputs: reports/metrics/evaluate_scrc/<variant>.json, data/evaluate_scrc/<variant>/predictions.parquet.
Params: run.seed, scrc.
"""
from __future__ import annotations

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import scrc
from stages._cli import stage_main

STAGE = "evaluate_scrc"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    metrics, predictions = scrc.evaluate(cfg, paths, item)
    write_parquet(predictions, paths.stage_dir(STAGE, item) / "predictions.parquet")
    write_json(paths.metrics(STAGE, item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
