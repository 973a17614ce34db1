"""fetch_data, prepare_referit, prepare_coco and report_data end to end on a tiny config."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from refexp.data.coco import decode_rle
from refexp.data.skips import DataError
from refexp.paths import Paths
from stages import fetch_data, prepare_coco, prepare_referit, report_data
from tests.conftest import require_shared, tiny_config


@pytest.fixture
def synthetic_run(in_tmp_dir):
    cfg = tiny_config()
    metrics = {name: fetch_data.run(cfg, name) for name in ("referit", "coco")}
    metrics["prepare_referit"] = prepare_referit.run(cfg, "referit")
    metrics["prepare_coco"] = prepare_coco.run(cfg, "coco")
    return cfg, Paths.from_config(cfg), metrics


def test_synthetic_tuples_and_vocab(synthetic_run):
    cfg, paths, metrics = synthetic_run
    tuples = pd.read_parquet(paths.tuples("referit"))
    m = metrics["prepare_referit"]
    assert len(tuples) == m["train/tuples"] + m["val/tuples"] + m["test/tuples"]
    assert set(tuples["split"]) == {"train", "val", "test"}
    assert tuples["image_path"].map(lambda p: (paths.root / p).is_file()).all()
    # Every synthetic region has a mask, and the mask lies inside the region's box.
    assert m["tuples_with_mask"] == len(tuples)
    row = tuples.iloc[0]
    mask = decode_rle(row.mask_rle, int(row.image_height), int(row.image_width))
    ys, xs = mask.nonzero()
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (row.x1, row.y1, row.x2, row.y2)
    # Vocabulary comes from train only: a word seen only outside train maps to <unk>.
    vocab = paths.vocab("referit").read_text().split()
    train_words = {t for ts in tuples.loc[tuples["split"] == "train", "tokens"] for t in ts}
    assert set(vocab[4:]) == train_words
    assert json.loads(paths.metrics("fetch_data", "referit").read_text())["source"] == "synthetic"


def test_coco_tables(synthetic_run):
    cfg, paths, metrics = synthetic_run
    captions = pd.read_parquet(paths.prepared("coco") / "captions.parquet")
    instances = pd.read_parquet(paths.prepared("coco") / "instances.parquet")
    assert metrics["prepare_coco"]["train/captions"] == (captions["split"] == "train").sum() > 0
    per_image = captions.groupby("image_id").size()
    assert (per_image == cfg.synthetic.captions_per_image).all()
    assert instances["mask_rle"].notna().all() and instances["category"].notna().all()
    assert captions["image_path"].map(lambda p: (paths.root / p).is_file()).all()


def test_report_data(synthetic_run):
    cfg, paths, _ = synthetic_run
    metrics = report_data.run(cfg)
    text = paths.report("data").read_text()
    tuples = pd.read_parquet(paths.tuples("referit"))
    for split, part in tuples.groupby("split"):
        row = f"| {split} | {part['image_id'].nunique()} | {part['region_id'].nunique()} | {len(part)} |"
        assert row in text
    assert "## referit (synthetic, referit format)" in text and "Expressions by kind" in text
    assert (paths.figures("data") / "expression_lengths.png").stat().st_size > 1000
    assert len(list(paths.figures("data").glob("sample_referit_*.png"))) == cfg.report_data.sample_images
    assert metrics["referit/expressions"] == len(pd.read_parquet(paths.tuples("referit")))


def test_fetch_is_deterministic(in_tmp_dir):
    cfg = tiny_config()
    paths = Paths.from_config(cfg)
    fetch_data.run(cfg, "referit")
    first = {p.relative_to(paths.raw("referit")): p.read_bytes() for p in paths.raw("referit").rglob("*") if p.is_file()}
    fetch_data.run(cfg, "referit")  # replaces the layout atomically
    second = {p.relative_to(paths.raw("referit")): p.read_bytes() for p in paths.raw("referit").rglob("*") if p.is_file()}
    assert first == second
    assert not list(paths.raw("referit").parent.glob("*.tmp"))


def test_local_import_of_real_referit(in_tmp_dir):
    root = require_shared("referit")
    cfg = tiny_config({"datasets": {"referit_real": {"root": str(root)}}})
    paths = Paths.from_config(cfg)
    fetched = fetch_data.run(cfg, "referit_real")
    assert fetched["local/files"] == sum(1 for p in root.rglob("*") if p.is_file())
    m = prepare_referit.run(cfg, "referit_real")
    # 54,134 real train expressions: one ('...') has no word and is a counted skip.
    assert (m["train/tuples"], m["val/tuples"], m["test/tuples"]) == (54_133, 5_842, 60_105)
    assert m["skipped/no_tokens"] == 1
    assert m["tuples_with_mask"] == 0  # the annotation-only copy has no masks
    tuples = pd.read_parquet(paths.tuples("referit_real"))
    assert tuples["image_path"].notna().sum() == (tuples["image_id"].isin(["38100", "40429"])).sum()


def test_local_import_missing_root_is_clear(in_tmp_dir):
    cfg = tiny_config({"datasets": {"referit_real": {"root": "/nonexistent/referit"}}})
    with pytest.raises(DataError, match="/nonexistent/referit.*directory not found"):
        fetch_data.run(cfg, "referit_real")
