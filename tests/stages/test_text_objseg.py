"""train_text_objseg_{lowres,highres} and evaluate_text_objseg end to end on a tiny world in a tmp dir:
32 x 32 images with a red and a green square, each square's mask the region to segment."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from refexp.config import parse_config
from refexp.data.coco import decode_rle, encode_mask
from tests.stages.test_attention_regression import write_tiny_world


def tiny_config(top: dict | None = None, **section):
    """top: other top-level params sections (e.g. scrc for the SCRC baseline rows)."""
    return parse_config({
        **(top or {}),
        "datasets": {name: {"format": name, "source": "synthetic"} for name in ("referit", "coco", "visual_genome")},
        "training": {"batch_size": 8, "checkpoint_every": 10, "log_every": 5},
        "text_objseg": {
            "dataset": "referit", "backbone": "tiny", "pretrained": False, "freeze_conv": False, "input_size": 32,
            "model": {"embed_dim": 8, "text_hidden": 12, "classifier_hidden": 16, "feature_dim": 16},
            "lowres_training": {"optimizer": "adam", "lr": 0.01, "steps": 40},
            "highres_training": {"optimizer": "adam", "lr": 0.005, "steps": 30},
            "eval_batch_size": 8, "variants": {"text_objseg": {}, "paper_spatial": {"spatial": 2}}, **section,
        },
    })


@pytest.fixture
def mask_world(tmp_path, monkeypatch):
    write_tiny_world(tmp_path)
    tuples = tmp_path / "data/prepare_referit/referit/tuples.parquet"
    df = pd.read_parquet(tuples)
    masks = []
    for r in df.itertuples():
        mask = np.zeros((32, 32), bool)
        mask[int(r.y1):int(r.y2) + 1, int(r.x1):int(r.x2) + 1] = True
        masks.append(encode_mask(mask))
    df["mask_rle"] = pd.array(masks, dtype="string")
    df.to_parquet(tuples, index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_low_then_high_resolution_then_evaluation(mask_world):
    from stages import evaluate_text_objseg, train_text_objseg_highres, train_text_objseg_lowres

    cfg = tiny_config()
    low = train_text_objseg_lowres.run(cfg, "text_objseg")
    assert low["train/steps"] == 40 and low["train/tuples"] == 32  # the tiny world has no val rows
    curve = pd.read_csv(mask_world / "reports/plots/train_text_objseg_lowres/text_objseg.csv")
    assert curve["loss"].iloc[-1] < curve["loss"].iloc[0]  # it learns
    high = train_text_objseg_highres.run(cfg, "text_objseg")
    assert high["train/steps"] == 30
    summary = evaluate_text_objseg.run(cfg, "text_objseg")
    for resolution in ("lowres", "highres"):
        saved = json.loads((mask_world / f"reports/metrics/evaluate_text_objseg/text_objseg_{resolution}.json").read_text())
        assert {"test/prec_at_0.5", "test/prec_at_0.9", "test/overall_iou", "test/mean_iou"} <= set(saved)
        assert saved["test/queries"] == 16 and 0 <= saved["test/overall_iou"] <= 1
        table = pd.read_parquet(mask_world / f"data/evaluate_text_objseg/text_objseg/{resolution}.parquet")
        assert len(table) == 16 and saved["test/mean_iou"] == pytest.approx(table["iou"].mean())
        assert saved["test/prec_at_0.5"] == pytest.approx((table["iou"] >= 0.5).mean())
        assert summary[f"{resolution}/test/overall_iou"] == saved["test/overall_iou"]
    # Predicting the whole image would give IoU 144/1024 per square: the trained model beats it.
    assert summary["highres/test/mean_iou"] > 144 / 1024

    # The whole-image baseline, by hand: each 12 x 12 square in a 32 x 32 image has IoU 144 / 1024.
    from stages import evaluate_text_objseg_baseline
    whole = evaluate_text_objseg_baseline.run(cfg, "whole_image")
    assert whole["test/overall_iou"] == pytest.approx(144 / 1024) and whole["test/mean_iou"] == pytest.approx(144 / 1024)
    assert whole["test/prec_at_0.5"] == 0.0 and whole["test/queries"] == 16

    from stages import report_text_objseg
    assert report_text_objseg.run(cfg)["variants_reported"] == 3
    report = (mask_world / "reports/segmentation.md").read_text()
    assert report.startswith("# Segmentation from natural language expressions")
    assert "## What this ran on" in report and "**synthetic data (the embedded world)**" in report
    assert "| Ours (high resolution) (paper) | 34.02 |" in report
    assert "**Ours (high resolution) (ours, `text_objseg_highres`)**" in report
    assert "**whole image (ours, `whole_image`)** | 0.00 |" in report
    assert "| per-word average (ours) | not run | – |" in report  # its params entry is absent here
    assert "`text_objseg_highres` > `whole_image`" in report
    assert "`text_objseg_highres` > `text_objseg_lowres`" in report  # the paper's claim, with its interval
    assert (mask_world / "reports/figures/segmentation/examples.png").stat().st_size > 1000
    assert (mask_world / "reports/figures/segmentation/training_curves.png").stat().st_size > 1000


def test_high_resolution_needs_the_low_resolution_model(mask_world):
    from refexp.data.skips import DataError
    from stages import train_text_objseg_highres

    with pytest.raises(DataError, match="train_text_objseg_lowres text_objseg first"):
        train_text_objseg_highres.run(tiny_config(), "text_objseg")


def test_the_paper_spatial_variant_trains(mask_world):
    from stages import train_text_objseg_lowres

    assert train_text_objseg_lowres.run(tiny_config(), "paper_spatial")["train/steps"] == 40


def test_rows_without_masks_are_counted_and_none_is_an_error(mask_world):
    from refexp.data.skips import DataError
    from stages import train_text_objseg_lowres

    tuples = mask_world / "data/prepare_referit/referit/tuples.parquet"
    df = pd.read_parquet(tuples)
    df.loc[:3, "mask_rle"] = pd.NA
    df.to_parquet(tuples, index=False)
    metrics = train_text_objseg_lowres.run(tiny_config(lowres_training={"steps": 2}), "text_objseg")
    assert metrics["train/skipped_without_mask"] == 4 and metrics["train/tuples"] == 28
    df["mask_rle"] = pd.NA
    df.to_parquet(tuples, index=False)
    with pytest.raises(DataError, match="no row has a mask"):
        train_text_objseg_lowres.run(tiny_config(), "text_objseg")


def test_stored_masks_round_trip_through_the_letterbox(mask_world):
    from refexp.data.letterbox import Letterbox

    df = pd.read_parquet(mask_world / "data/prepare_referit/referit/tuples.parquet")
    mask = decode_rle(df["mask_rle"].iloc[0], 32, 32)
    assert mask.sum() == 144
    # Into a 64 x 64 input and back: the same pixels, as evaluation maps predictions back.
    box = Letterbox.fit(32, 32, 64, 64)
    padded = box.mask(mask)
    assert padded.sum() == 4 * 144
    assert np.array_equal(box.restore(np.where(padded, 1.0, -1.0)) > 0, mask)


def test_cached_body_maps_train_the_same_model(mask_world):
    """With the conv body fixed, caching its maps is exact: the same trained weights as running it each step."""
    import torch

    from refexp.paths import Paths
    from refexp.training import text_objseg

    states = []
    for cache in (False, True):
        cfg = tiny_config(freeze_conv=True, cache_frozen_features=cache, lowres_training={"steps": 6})
        paths = Paths.from_config(cfg)
        metrics = text_objseg.train(cfg, paths, "text_objseg", "lowres", progress=False)
        states.append(torch.load(text_objseg.model_dir(paths, "lowres", "text_objseg") / "model.pt", weights_only=True))
        assert metrics["train/steps"] == 6
    assert all(torch.allclose(states[0][k], states[1][k], atol=1e-5) for k in states[0])


def test_image_groups_partition_the_rows_by_image(mask_world):
    """Each training row in exactly one group, a group's rows all of one image, at most k of them, the
    same groups for the same seed; collate_groups stacks one body map per image and names each row's."""
    import torch

    from refexp.paths import Paths
    from refexp.training import text_objseg

    cfg = tiny_config()
    paths = Paths.from_config(cfg)
    rows, vocab, _ = text_objseg.training_rows(cfg, paths)
    examples = text_objseg.build_examples(rows, vocab, paths.root, 32, 20, 8)
    examples.body_maps = torch.randn(len(examples.images), 5, 4, 4)
    groups = text_objseg.ImageGroups.of(examples, 3, seed=0)
    flat = torch.cat(groups.groups)
    assert sorted(flat.tolist()) == list(range(len(examples)))
    assert all(len(g) <= 3 and len(set(examples.image_index[g].tolist())) == 1 for g in groups.groups)
    assert len(groups) == sum(-(-int((examples.image_index == i).sum()) // 3) for i in range(len(examples.images)))
    again = text_objseg.ImageGroups.of(examples, 3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(groups.groups, again.groups))
    assert any(not torch.equal(a, b) for a, b in zip(groups.groups, text_objseg.ImageGroups.of(examples, 3, seed=1).groups))

    batch = text_objseg.collate_groups([groups[0], groups[1]])
    first, second = groups.groups[0], groups.groups[1]
    assert batch["body_maps"].shape == (2, 5, 4, 4)
    assert batch["image_of"].tolist() == [0] * len(first) + [1] * len(second)
    assert torch.equal(batch["labels"], examples.labels[torch.cat([first, second])])
    assert torch.equal(batch["lengths"], examples.lengths[torch.cat([first, second])])
    assert torch.equal(batch["body_maps"][1], examples.body_maps[examples.image_index[second[0]]])


def test_image_groups_hold_distinct_regions_where_the_image_has_enough():
    """Each region's paraphrases go to different groups: 4 regions x 2 expressions -> two groups of the 4
    regions; 2 regions (3 + 1 expressions) in groups of 2 -> the second region shares the first group only."""
    import numpy as np
    import torch

    from refexp.training import text_objseg

    regions = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5])
    image_index = torch.tensor([0] * 8 + [1] * 4)
    examples = text_objseg.SegmentationExamples(
        images=torch.zeros(2, 3, 8, 8, dtype=torch.uint8), image_index=image_index,
        tokens=torch.ones(12, 1, dtype=torch.long), lengths=torch.ones(12, dtype=torch.long),
        labels=torch.zeros(12, 1, 1, dtype=torch.uint8), letterboxes=[], regions=regions)
    for seed in range(5):
        groups = [sorted(regions[g.numpy()].tolist()) for g in text_objseg.ImageGroups.of(examples, 4, seed).groups]
        assert groups[:2] == [[0, 1, 2, 3], [0, 1, 2, 3]]
        assert groups[2] == [4, 4, 4, 5]
        pairs = [sorted(regions[g.numpy()].tolist()) for g in text_objseg.ImageGroups.of(examples, 2, seed).groups]
        assert all(len(set(p)) == 2 for p in pairs[:4]) and sorted(map(tuple, pairs[4:])) == [(4, 4), (4, 5)]


def test_grouped_batches_train_and_resume_to_the_same_weights(mask_world, monkeypatch):
    """expressions_per_image > 1 trains (the loss falls) through the engine, and a run cut short resumes
    to the uninterrupted run's weights."""
    import shutil

    import torch

    from refexp.paths import Paths
    from refexp.training import text_objseg
    from refexp.training.engine import fit

    cfg = tiny_config(freeze_conv=True, cache_frozen_features=True, expressions_per_image=2,
                      lowres_training={"steps": 30, "batch_size": 4})
    paths = Paths.from_config(cfg)
    metrics = text_objseg.train(cfg, paths, "text_objseg", "lowres", progress=False)
    assert metrics["train/steps"] == 30 and metrics["train/tuples"] == 32
    curve = pd.read_csv(mask_world / "reports/plots/train_text_objseg_lowres/text_objseg.csv")
    assert curve["loss"].iloc[-3:].mean() < curve["loss"].iloc[:3].mean()
    whole = torch.load(text_objseg.model_dir(paths, "lowres", "text_objseg") / "model.pt", weights_only=True)

    shutil.rmtree(text_objseg.model_dir(paths, "lowres", "text_objseg"))
    with monkeypatch.context() as m:  # killed after 12 steps (checkpoint written)
        m.setattr(text_objseg, "fit", lambda *a, **k: fit(*a, **{**k, "stop_after_steps": 12}))
        cut = text_objseg.train(cfg, paths, "text_objseg", "lowres", progress=False)
    assert cut["train/stopped_early"]
    text_objseg.train(cfg, paths, "text_objseg", "lowres", progress=False)
    resumed = torch.load(text_objseg.model_dir(paths, "lowres", "text_objseg") / "model.pt", weights_only=True)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
