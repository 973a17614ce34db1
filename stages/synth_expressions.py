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


# What synthesize reads, beyond what the common schema requires.
INSTANCE_COLUMNS = ("image_id", "region_id", "x1", "y1", "x2", "y2", "category", "mask_rle", "split")


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    source = paths.prepared(item) / "instances.parquet"
    if not source.exists():
        raise DataError(source, "missing (run prepare_coco for this dataset)")
    try:
        instances = pd.read_parquet(source)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid (a cut or foreign file) is a ValueError
        raise DataError(source, f"unreadable parquet ({err}); rerun prepare_coco for this dataset") from None
    missing = [c for c in INSTANCE_COLUMNS if c not in instances.columns]
    if missing:
        raise DataError(source, f"lacks columns {missing}; rerun prepare_coco for this dataset")
    skips = SkipCounter()
    records = synthesize(instances, item, skips, str(source), cfg.synth_expressions.include_crowd)
    if records.empty:  # an empty table downstream would look like a finished stage
        raise DataError(source, f"no records: {len(instances)} instances read, skipped: {skips.summary()}")
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
