"""train_region_proposals and extract_region_features end to end on a tiny world in a tmp dir: dark 64 x 64
JPEGs (one 96 x 48, letterboxed) with bright rectangles, each rectangle a corpus region."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from refexp.config import parse_config
from refexp.data.skips import DataError

SPLITS = ["train"] * 12 + ["val"] * 2 + ["test"] * 4


def tiny_config(**rpn):
    return parse_config({
        "datasets": {name: {"format": name, "source": "synthetic"} for name in ("referit", "coco", "visual_genome")},
        "training": {"checkpoint_every": 4, "log_every": 2, "cpu_threads": 1},
        "grn": {"dataset": "visual_genome", "backbone": "tiny", "pretrained": False, "image_size": 64,
                "region_map_size": 2,
                "rpn": {"anchor_sizes": [16, 32], "aspect_ratios": [1.0], "pre_nms_top_n": 100,
                        "proposals_per_image": 8, "anchors_per_image": 64,
                        "training": {"optimizer": "adam", "lr": 0.01, "steps": 10, "batch_size": 4}, **rpn}},
    })


def write_world(root) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(SPLITS):
        w, h = (96, 48) if i == 1 else (64, 64)
        pixels = np.full((h, w, 3), 20, np.uint8)
        for r in range(int(rng.integers(1, 3))):
            bw, bh = rng.integers(10, 30, 2)
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            x2, y2 = x1 + int(bw) - 1, y1 + int(bh) - 1
            pixels[y1:y2 + 1, x1:x2 + 1] = 230
            rows.append({"dataset": "visual_genome", "image_id": str(i),
                         "image_path": f"data/raw/visual_genome/VG_100K/{i}.jpg", "image_width": w,
                         "image_height": h, "region_id": f"{i}_{r}", "x1": float(x1), "y1": float(y1),
                         "x2": float(x2), "y2": float(y2), "expression": "a white box", "split": split,
                         "set_id": -1, "role": "none"})
        (root / "data/raw/visual_genome/VG_100K").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"data/raw/visual_genome/VG_100K/{i}.jpg", quality=95)
    rows.append({**rows[0], "region_id": "bad", "x2": 64.0})  # past the right edge: a counted skip
    corpus = pd.DataFrame(rows)
    (root / "data/build_region_benchmark/visual_genome").mkdir(parents=True)
    corpus.to_parquet(root / "data/build_region_benchmark/visual_genome/corpus.parquet", index=False)
    return corpus


@pytest.fixture
def world(tmp_path, monkeypatch):
    corpus = write_world(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    yield tmp_path, corpus
    torch.set_num_threads(before)  # the stages set training.cpu_threads


def test_train_then_extract(world):
    from stages import extract_region_features, train_region_proposals

    root, corpus = world
    cfg = tiny_config()
    metrics = train_region_proposals.run(cfg, "visual_genome")
    saved = json.loads((root / "reports/metrics/train_region_proposals/visual_genome.json").read_text())
    assert saved == pytest.approx(metrics, nan_ok=True)
    assert metrics["train/steps"] == 10 and metrics["train/images"] == 12 and metrics["skipped/box_outside_image"] == 1
    assert metrics["regions"] == len(corpus) and metrics["regions/valid"] == len(corpus) - 1
    for key in ("train/loss_objectness", "train/loss_box_reg", "test/proposal_recall_at_0.5",
                "test/proposal_recall_at_0.7", "test/grid_recall_at_0.5", "test/grid_recall_at_0.7"):
        assert np.isfinite(metrics[key]), key
    assert metrics["test/images"] == 4 and metrics["test/proposals_per_image"] <= 8
    assert metrics["test/grid_boxes_per_image"] == 8
    curve = pd.read_csv(root / "reports/plots/train_region_proposals/visual_genome.csv")
    assert {"step", "loss", "loss/objectness", "loss/box_reg"} <= set(curve) and curve["step"].iloc[-1] == 10
    assert {p.name for p in (root / "models/region_proposals/visual_genome").iterdir()} == {"checkpoint.pt", "model.pt"}

    out = extract_region_features.run(cfg, "visual_genome")
    folder = root / "data/extract_region_features/visual_genome"
    assert sorted(p.name for p in folder.iterdir()) == ["proposals.parquet", "proposals.pt", "regions.pt"]
    regions = torch.load(folder / "regions.pt", weights_only=True)
    assert set(regions) == {"features", "valid", "boxes", "meta"}
    assert regions["features"].shape == (len(corpus), 128, 2, 2) and regions["features"].dtype == torch.float16
    assert regions["valid"].tolist() == [True] * (len(corpus) - 1) + [False]
    assert not regions["features"][-1].any() and regions["features"][:-1].abs().sum((1, 2, 3)).gt(0).all()
    assert torch.equal(regions["boxes"], torch.tensor(corpus[["x1", "y1", "x2", "y2"]].to_numpy(), dtype=torch.float32))
    assert regions["meta"] == {"backbone": "tiny", "pretrained": False, "image_size": 64, "region_map_size": 2,
                               "channels": 128, "stride": 8}
    # Row order is the corpus's: image 1's (letterboxed) regions recomputed from its own map match their rows.
    from refexp.paths import Paths
    from refexp.training.region_features import Corpus, backbone_maps, frozen_backbone, input_boxes, roi_features

    corpus_ = Corpus.read(Paths.from_config(cfg), "visual_genome")
    rows = corpus_.rows_of(1)
    (_, maps), = backbone_maps(frozen_backbone(cfg.grn, Paths.from_config(cfg), cfg.run.seed), corpus_, np.array([1]),
                               root, 64)
    again = roi_features(maps, [input_boxes(corpus_, 1, rows, 64)], 8, 2)
    assert len(rows) and torch.allclose(regions["features"][torch.from_numpy(rows)].float(), again, atol=1e-2, rtol=1e-2)

    table = pd.read_parquet(folder / "proposals.parquet")
    assert list(table.columns) == ["image_id", "proposal", "x1", "y1", "x2", "y2", "score", "split",
                                   "best_iou", "best_row"]
    features = torch.load(folder / "proposals.pt", weights_only=True)["features"]
    assert features.shape == (len(table), 128, 2, 2) and features.dtype == torch.float16
    assert out["proposals"] == len(table) and out["images"] == len(SPLITS)
    assert table.groupby("image_id").size().max() <= 8
    order = table["image_id"].drop_duplicates().astype(int).tolist()
    assert order == sorted(order)  # corpus order
    test = table[table["split"] == "test"]  # the RPN setting's candidates: every proposal of a test image
    assert test["image_id"].nunique() == 4
    assert (test.groupby("image_id")["proposal"].apply(lambda s: s.tolist() == list(range(len(s))))).all()
    # Of a train or val image, only GRN's training positives are kept; the rest is counted.
    kept = table[table["split"] != "test"]
    assert (kept["best_iou"] > cfg.grn.train_positive_iou).all()
    assert out["proposals/not_kept_train_val_below_train_positive_iou"] > 0
    assert table.groupby("image_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    wide = table[table["image_id"] == "1"]  # the letterboxed 96 x 48 image: proposals stay inside it
    assert (wide["x1"] >= 0).all() and (wide["x2"] <= 95).all() and (wide["y2"] <= 47).all()
    assert table["best_iou"].between(0, 1).all() and (table["best_row"] < len(corpus) - 1).all()
    assert "test" in set(table["split"])
    assert out["skipped/box_outside_image"] == 1 and out["size/proposals_mb"] > 0
    assert out["train/proposals"] + out["val/proposals"] + out["test/proposals"] == len(table)
    assert json.loads((root / "reports/metrics/extract_region_features/visual_genome.json").read_text()) == out


def test_a_stopped_run_resumes_to_the_same_weights(world, tmp_path_factory, monkeypatch):
    from refexp.paths import Paths
    from refexp.training import region_proposals
    from stages import train_region_proposals

    root, _ = world
    cfg = tiny_config()
    stopped = region_proposals.train(cfg, Paths.from_config(cfg), "visual_genome", progress=False, stop_after_steps=6)
    assert stopped["train/stopped_early"] and stopped["train/steps"] == 6
    assert not (root / "models/region_proposals/visual_genome/model.pt").exists()
    resumed = train_region_proposals.run(cfg, "visual_genome")
    assert resumed["train/steps"] == 10
    weights = torch.load(root / "models/region_proposals/visual_genome/model.pt", weights_only=True)

    other = tmp_path_factory.mktemp("uninterrupted")
    write_world(other)
    monkeypatch.chdir(other)
    whole = train_region_proposals.run(cfg, "visual_genome")
    reference = torch.load(other / "models/region_proposals/visual_genome/model.pt", weights_only=True)
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    assert whole["test/proposal_recall_at_0.5"] == resumed["test/proposal_recall_at_0.5"]
    assert whole["train/loss"] == pytest.approx(resumed["train/loss"])


def test_errors_name_what_is_missing(world):
    from stages import extract_region_features, train_region_proposals

    root, _ = world
    cfg = tiny_config()
    with pytest.raises(DataError, match="run train_region_proposals visual_genome first"):
        extract_region_features.run(cfg, "visual_genome")
    (root / "data/raw/visual_genome/VG_100K/3.jpg").write_bytes(b"truncated")
    with pytest.raises(DataError, match="VG_100K/3.jpg.*cannot read image"):
        train_region_proposals.run(cfg, "visual_genome")
    (root / "data/build_region_benchmark/visual_genome/corpus.parquet").unlink()
    with pytest.raises(DataError, match="run build_region_benchmark visual_genome first"):
        train_region_proposals.run(cfg, "visual_genome")
    assert not (root / "data/extract_region_features").exists()
