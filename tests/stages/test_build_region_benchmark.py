"""build_region_benchmark end to end: synthetic world, the real VG sample, and bad input."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from refexp.paths import Paths
from stages import build_region_benchmark, fetch_data
from tests.conftest import require_shared, tiny_config

FAST = {"meteor_jvms": 1, "dask": {"local_workers": 2, "join_blocks": 3}}


def _check_tables(paths: Paths, item: str, metrics: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    out = paths.stage_dir("build_region_benchmark", item)
    regions = pd.read_parquet(out / "regions.parquet")
    queries = pd.read_parquet(out / "queries.parquet")
    pairs = pd.read_parquet(out / "pairs.parquet")
    corpus = pd.read_parquet(out / "corpus.parquet")
    assert json.loads(paths.metrics("build_region_benchmark", item).read_text()) == metrics
    # counts add up: input = valid + every skip reason; each filter = kept + dropped of the previous
    skipped = sum(v for k, v in metrics.items() if k.startswith("skipped/"))
    assert metrics["input/regions"] == metrics["valid/regions"] + skipped
    assert metrics["valid/regions"] == metrics["filter/area/kept"] + metrics["filter/area/dropped"]
    assert metrics["filter/area/kept"] == metrics["filter/multi_object/kept"] + metrics["filter/multi_object/dropped"]
    assert metrics["filter/multi_object/kept"] == metrics["filter/iou_dedup/kept"] + metrics["filter/iou_dedup/dropped"]
    assert metrics["mining/pairs_bleu"] == len(pairs) and metrics["mining/pairs_kept"] == int(pairs.kept.sum())
    # sets: exactly one query each, the rest targets; a set lives in one split; splits are disjoint by image
    assert (regions.groupby("set_id")["role"].apply(lambda r: (r == "query").sum()) == 1).all()
    assert (regions.groupby("set_id")["split"].nunique() == 1).all()
    assert (regions.groupby("image_id")["split"].nunique() == 1).all()
    assert len(queries) == metrics["sets/count"] == sum(metrics[f"{s}/queries"] for s in ("train", "val", "test"))
    sizes = regions.groupby("set_id").size()
    assert (queries.set_index("set_id")["target_region_ids"].map(len) == sizes - 1).all()
    assert (pairs.image_id_a != pairs.image_id_b).all()
    assert ((regions.x2 >= regions.x1) & (regions.x2 < regions.image_width)).all()
    # corpus: every filtered region of the split images; its set members are regions.parquet's rows
    assert corpus["region_id"].is_unique and set(corpus["split"]) <= {"train", "val", "test"}
    assert len(corpus) <= metrics["filter/iou_dedup/kept"]
    members = corpus[corpus["set_id"] >= 0][list(regions.columns)].sort_values("region_id").reset_index(drop=True)
    assert members.equals(regions.sort_values("region_id").reset_index(drop=True))
    assert set(corpus.loc[corpus["set_id"] < 0, "role"]) <= {"none"}
    assert (corpus.loc[corpus["set_id"] >= 0, "role"] != "none").all()
    assert set(corpus["image_id"]) >= set(regions["image_id"])
    assert (corpus.groupby("image_id")["split"].nunique() == 1).all()
    for split in ("train", "val", "test"):
        assert metrics[f"{split}/corpus_regions"] == int((corpus["split"] == split).sum())
        assert metrics[f"{split}/corpus_images"] == corpus.loc[corpus["split"] == split, "image_id"].nunique()
        assert metrics[f"{split}/corpus_regions"] >= metrics[f"{split}/regions"]
    return regions, queries, pairs


@pytest.mark.slow
def test_synthetic_world(in_tmp_dir):
    # 12 world images + 140 VG-only scenes at the default thresholds: the VG-only phrases recur enough for sets
    cfg = tiny_config({"synthetic": {"vg_images": 152, "vg_regions_per_image": 8},
                       "build_region_benchmark": {**FAST, "val_fraction": 0.2, "test_fraction": 0.2}})
    fetch_data.run(cfg, "visual_genome")
    metrics = build_region_benchmark.run(cfg, "visual_genome")
    paths = Paths.from_config(cfg)
    assert metrics["input/images"] == 152 and metrics["input/regions"] == 152 * 8
    regions, queries, pairs = _check_tables(paths, "visual_genome", metrics)
    assert metrics["sets/count"] > 0 and metrics["filter/multi_object/judged_by_rule"] > 0
    for split in ("train", "val", "test"):
        assert metrics[f"{split}/queries"] > 0, split
        # the corpus also holds regions in no set
        assert metrics[f"{split}/corpus_regions"] > metrics[f"{split}/regions"], split
    assert regions["image_path"].map(lambda p: (paths.root / p).is_file()).all()
    corpus = pd.read_parquet(paths.stage_dir("build_region_benchmark", "visual_genome") / "corpus.parquet")
    assert corpus["image_path"].map(lambda p: (paths.root / p).is_file()).all()


@pytest.mark.shared
def test_real_visual_genome_sample(in_tmp_dir):
    raw = in_tmp_dir / "data" / "raw" / "vg_sample"
    raw.mkdir(parents=True)
    for name in ("region_descriptions.json", "image_data.json"):
        (raw / name).symlink_to(require_shared("visual_genome", "v1.2", f"{name}_samples.json"))
    cfg = tiny_config({"datasets": {"vg_sample": {"format": "visual_genome", "source": "local", "root": "unused"}},
                       "build_region_benchmark": {**FAST, "datasets": ["vg_sample"]}, "grn": {"dataset": "vg_sample"}})
    metrics = build_region_benchmark.run(cfg, "vg_sample")
    raw_count = sum(len(im["regions"]) for im in json.loads((raw / "region_descriptions.json").read_text()))
    assert metrics["input/regions"] == raw_count == 7278
    assert metrics["filter/area/dropped"] > 0 and metrics["filter/multi_object/dropped"] > 0
    _check_tables(Paths.from_config(cfg), "vg_sample", metrics)


def test_bad_input_is_counted(in_tmp_dir):
    raw = in_tmp_dir / "data" / "raw" / "vg_bad"
    raw.mkdir(parents=True)
    good = "a man riding a horse on the beach"

    def region(rid, image, phrase, x=10, y=10, w=60, h=60):
        return {"region_id": rid, "image_id": image, "phrase": phrase, "x": x, "y": y, "width": w, "height": h}

    regions = [
        {"regions": [region(1, 1, good), region(2, 1, "   "), region(3, 1, "un café sur la table")]},
        {"regions": [region(4, 2, good), region(5, 2, "a dog on a sofa", w=0), region(6, 2, "a dog on a sofa", x=500)]},
        {"regions": [region(7, 3, good), region(8, 99, good), region(9, 3, "a cat near a dog", x=-20, w=60)]},
        {"regions": [{"region_id": 10, "image_id": 3, "phrase": "no box at all"}]},
    ]
    (raw / "region_descriptions.json").write_text(json.dumps(regions))
    (raw / "image_data.json").write_text(json.dumps(
        [{"image_id": i, "width": 100, "height": 100, "url": f"x/VG_100K/{i}.jpg"} for i in (1, 2, 3)]))
    cfg = tiny_config({"datasets": {"vg_bad": {"format": "visual_genome", "source": "local", "root": "unused"}},
                       "build_region_benchmark": {**FAST, "datasets": ["vg_bad"], "area_min": None},
                       "grn": {"dataset": "vg_bad"}})
    m = build_region_benchmark.run(cfg, "vg_bad")
    assert m["input/regions"] == 10
    assert {k: v for k, v in m.items() if k.startswith("skipped/")} == {
        "skipped/empty_phrase": 1, "skipped/non_ascii_phrase": 1, "skipped/nonpositive_box_size": 1,
        "skipped/outside_image": 1, "skipped/unknown_image": 1, "skipped/malformed_region": 1}
    assert m["valid/regions"] == 4 and m["valid/clipped_to_image"] == 1
    assert m["mining/pairs_kept"] == 3  # regions 1, 4, 7: the same phrase in three images
    assert m["sets/count"] == 1 or m["sets/pairs_across_splits_dropped"] > 0
