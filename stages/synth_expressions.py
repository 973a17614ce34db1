"""synth_expressions: COCO instances -> common-schema records whose expression is the class name.

Inputs: data/prepare_coco/<item>/instances.parquet (prepare_coco's instance table).
Outputs: data/synth_expressions/<item>/tuples.parquet, reports/metrics/synth_expressions/<item>.json.
Params: synth_expressions.datasets, synth_expressions.include_crowd.
"""
from __future__ import annotations

import pandas as pd

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.data.skips import DataError, SkipCounter
from refexp.paths import Paths
from refexp.text.class_names import synthesize
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    source = paths.prepared(item) / "instances.parquet"
    if not source.exists():
        raise DataError(source, "missing (run prepare_coco for this dataset)")
    instances = pd.read_parquet(source)
    skips = SkipCounter()
    records = synthesize(instances, item, skips, str(source), cfg.synth_expressions.include_crowd)
    metrics = {"input/instances": len(instances), "records": len(records),
               "categories": int(records["category"].nunique()), **skips.as_metrics()}
    for split, n in records["split"].value_counts().sort_index().items():
        metrics[f"{split}/records"] = int(n)
    write_parquet(records, paths.stage_dir("synth_expressions", item) / "tuples.parquet")
    write_json(paths.metrics("synth_expressions", item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
