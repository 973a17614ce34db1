"""synth_expressions: class-name expressions from COCO instances (synthetic world and real sample)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from refexp.data.coco import load_instances
from refexp.data.schema import COLUMNS
from refexp.data.skips import DataError, SkipCounter
from refexp.paths import Paths
from refexp.text.class_names import class_name_expression, synthesize
from stages import fetch_data, prepare_coco, synth_expressions
from tests.conftest import require_shared, tiny_config


def test_class_name_expression():
    assert class_name_expression("person") == "person"
    assert class_name_expression("Traffic_light") == "traffic light"
    assert class_name_expression(" hair  drier ") == "hair drier"


def test_stage_on_synthetic_world(in_tmp_dir):
    cfg = tiny_config()
    fetch_data.run(cfg, "coco")
    prepare_coco.run(cfg, "coco")
    metrics = synth_expressions.run(cfg, "coco")
    paths = Paths.from_config(cfg)
    instances = pd.read_parquet(paths.prepared("coco") / "instances.parquet")
    out = pd.read_parquet(paths.stage_dir("synth_expressions", "coco") / "tuples.parquet")
    assert list(out.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert metrics["records"] == len(out) and metrics["input/instances"] == len(instances)
    skipped = sum(v for k, v in metrics.items() if k.startswith("skipped/"))
    assert len(out) + skipped == len(instances)
    assert (out["expression"] == out["category"].str.lower()).all()
    assert (out["tokens"].map(list) == out["expression"].str.split()).all()
    assert out["mask_rle"].notna().all() and (out["kind"] == "class_name").all()
    merged = out.merge(instances, on="region_id", suffixes=("", "_in"))
    assert (merged[["x1", "y1", "x2", "y2"]].to_numpy() == merged[["x1_in", "y1_in", "x2_in", "y2_in"]].to_numpy()).all()
    assert json.loads(paths.metrics("synth_expressions", "coco").read_text()) == metrics


def test_missing_input_is_a_clear_error(in_tmp_dir):
    with pytest.raises(DataError, match="instances.parquet"):
        synth_expressions.run(tiny_config(), "coco")


@pytest.mark.shared
def test_real_coco_sample_instances():
    path = require_shared("coco", "val2017_3img", "instances_val2017_small.json")
    raw = json.loads(path.read_text())
    skips = SkipCounter()
    instances = load_instances(path, skips)
    out_skips = SkipCounter()
    records = synthesize(instances, "coco_sample", out_skips, str(path))
    names = {c["id"]: c["name"] for c in raw["categories"]}
    assert len(records) + out_skips.total + skips.total == len(raw["annotations"])
    expected = sorted(names[a["category_id"]] for a in raw["annotations"] if not a.get("iscrowd", 0))
    assert sorted(records["expression"]) == sorted(class_name_expression(n) for n in expected)
