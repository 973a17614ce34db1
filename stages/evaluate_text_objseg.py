"""evaluate_text_objseg: mask metrics of one segmentation variant at both resolutions (Table 1's
"Ours (low resolution)" and "Ours (high resolution)" rows).

Inputs: models/text_objseg_{lowres,highres}/<variant>/checkpoint.pt,
        data/prepare_referit/<text_objseg.dataset>/{tuples.parquet, vocab.txt} (test split) and its images.
Outputs: reports/metrics/evaluate_text_objseg/<variant>_{lowres,highres}.json (test/prec_at_0.5 .. 0.9,
         test/overall_iou, test/mean_iou, ms/query), data/evaluate_text_objseg/<variant>/{lowres,highres}.parquet
         (per-query IoU, for intervals resampled by image).
Params: run.seed, text_objseg.
"""
from __future__ import annotations

import torch

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import text_objseg
from stages._cli import stage_main

STAGE = "evaluate_text_objseg"


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    summary = {}
    for resolution in text_objseg.RESOLUTIONS:
        metrics, table = text_objseg.evaluate(cfg, paths, item, resolution)
        write_parquet(table, paths.stage_dir(STAGE, item) / f"{resolution}.parquet")
        write_json(paths.metrics(STAGE, f"{item}_{resolution}"), metrics)
        summary.update({f"{resolution}/{k}": v for k, v in metrics.items()})
    return summary


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
