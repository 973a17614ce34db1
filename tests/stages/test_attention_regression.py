"""train/evaluate_attention_regression end to end on a tiny prepared table in a tmp dir."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from refexp.config import parse_config
from refexp.data.schema import to_frame
from refexp.text.vocab import Vocab

VARIANTS = {
    "attention_full": {},
    "no_text_attention": {"text_attention": False},
    "no_attention": {"image_attention": False, "text_attention": False},
    "no_penalty": {"lambda_penalty": 0.0},
    "text_only": {"use_image": False, "image_attention": False, "text_attention": False},
}
CORNERS = [(2, 2), (18, 2), (2, 18), (18, 18)]


def write_tiny_world(root, n_images: int = 24, seed: int = 0) -> None:
    """Prepared ReferIt-style tables: 32x32 images, a red and a green 12x12 square each."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n_images):
        a, b = rng.permutation(4)[:2]
        pixels = np.zeros((32, 32, 3), np.uint8)
        for channel, corner in ((0, CORNERS[a]), (1, CORNERS[b])):
            x, y = corner
            pixels[y:y + 12, x:x + 12, channel] = 255
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        split = "train" if i < 16 else "test"
        for colour, corner in (("red", CORNERS[a]), ("green", CORNERS[b])):
            x, y = corner
            records.append(dict(dataset="referit", image_id=str(i), image_path=f"images/{i}.png", image_width=32,
                                image_height=32, region_id=f"{i}_{colour}", x1=x, y1=y, x2=x + 11, y2=y + 11,
                                expression=f"{colour} square", tokens=[colour, "square"],
                                kind="attribute", split=split))
    prepared = root / "data" / "prepare_referit" / "referit"
    prepared.mkdir(parents=True)
    df = to_frame(records)
    df.to_parquet(prepared / "tuples.parquet", index=False)
    Vocab.build(df.loc[df.split == "train", "tokens"]).save(prepared / "vocab.txt")


def tiny_config(**training):
    return parse_config({
        # Every dataset other sections name by default; only referit's prepared tables are used.
        "datasets": {name: {"format": name, "source": "synthetic"} for name in ("referit", "coco", "visual_genome")},
        "training": {"steps": 12, "batch_size": 8, "lr": 0.003, "checkpoint_every": 5, "log_every": 2, **training},
        "attention_regression": {
            "dataset": "referit", "backbone": "tiny", "pretrained": False, "freeze_backbone": False,
            "image_size": 32, "eval_batch_size": 16, "training": {},
            "model": {"embedding_dim": 8, "lstm_hidden": 12, "feature_grid": 4, "image_attention_hidden": 10,
                      "image_attention_layers": 2, "text_attention_hidden": 8, "region_hidden": 10,
                      "dropout": 0.1, "lambda_squared_error": 0.01},
            "variants": VARIANTS,
        },
    })


@pytest.fixture
def tiny_world(tmp_path, monkeypatch):
    write_tiny_world(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_then_evaluate_each_variant(tiny_world, variant):
    from stages import evaluate_attention_regression, train_attention_regression

    cfg = tiny_config()
    train_metrics = train_attention_regression.run(cfg, variant)
    assert train_metrics["train/steps"] == 12 and np.isfinite(train_metrics["train/loss"])
    assert (tiny_world / "models/attention_regression" / variant / "checkpoint.pt").exists()
    curve = pd.read_csv(tiny_world / "reports/plots/train_attention_regression" / f"{variant}.csv")
    assert {"step", "loss", "loss/iou"} <= set(curve.columns) and curve["step"].iloc[-1] == 12
    metrics = evaluate_attention_regression.run(cfg, variant)
    saved = json.loads((tiny_world / "reports/metrics/evaluate_attention_regression" / f"{variant}.json").read_text())
    assert saved == pytest.approx(metrics)
    assert metrics["test/queries"] == 16 and 0.0 <= metrics["test/accuracy"] <= 1.0
    assert "test/accuracy/attribute" in metrics
    table = pd.read_parquet(tiny_world / "data/evaluate_attention_regression" / variant / "predictions.parquet")
    assert len(table) == 16
    assert ("image_attention" in table.columns) == (variant in ("attention_full", "no_text_attention", "no_penalty"))
    # The stored IoU is the inclusive-convention IoU of the stored boxes.
    from refexp.metrics.boxes import paired_iou
    recomputed = paired_iou(table[["pred_x1", "pred_y1", "pred_x2", "pred_y2"]].to_numpy(),
                            table[["x1", "y1", "x2", "y2"]].to_numpy().astype(float)).numpy()
    assert np.allclose(recomputed, table["iou"])
    assert metrics["test/accuracy"] == pytest.approx(float((table["iou"] >= 0.5).mean()))
    # Per target size, the accuracies recombine to the overall one.
    from refexp.metrics.attention import cells_in_box, target_size_groups
    sizes = target_size_groups(table)
    for size in set(sizes):
        assert metrics[f"test/accuracy/{size}_target"] == pytest.approx(float((table["iou"][sizes == size] >= 0.5).mean()))
    if "image_attention" in table.columns:
        # The localisation metrics are the means of the stored per-query values, recomputed here.
        attention = np.stack(table["image_attention"].to_numpy())
        grid = int(round(attention.shape[1] ** 0.5))
        inside = cells_in_box(grid, table[["x1", "y1", "x2", "y2"]].to_numpy(), table["image_width"], table["image_height"])
        peak = inside[np.arange(16), attention.argmax(1)] & (attention.sum(1) > 0)
        assert table["attention_peak_in_box"].tolist() == peak.tolist()
        assert metrics["test/attention_peak_in_box"] == pytest.approx(float(peak.mean()))
        assert metrics["test/attention_mass_in_box"] == pytest.approx(float(table["attention_mass_in_box"].mean()))
    else:
        assert "test/attention_peak_in_box" not in metrics


def test_kill_and_resume_reaches_the_same_metrics(tiny_world):
    from refexp.paths import Paths
    from refexp.training.attention_regression import train_variant
    from stages import evaluate_attention_regression, train_attention_regression

    cfg = tiny_config()
    straight = train_attention_regression.run(cfg, "attention_full")
    straight_eval = evaluate_attention_regression.run(cfg, "attention_full")
    # Same run again, "killed" after 7 of 12 steps, then resumed by a second call.
    (tiny_world / "models/attention_regression/attention_full/checkpoint.pt").unlink()
    section, paths = cfg.attention_regression, Paths.from_config(cfg)
    partial = train_variant(section, cfg.training.merged(section.training), "attention_full", paths, seed=0,
                            stop_after_steps=7)
    assert partial["train/steps"] == 7
    resumed = train_attention_regression.run(cfg, "attention_full")
    assert resumed["train/loss"] == pytest.approx(straight["train/loss"], abs=1e-6)
    assert evaluate_attention_regression.run(cfg, "attention_full")["test/accuracy"] == straight_eval["test/accuracy"]


def test_missing_tables_are_a_clear_error(tmp_path, monkeypatch):
    from refexp.data.skips import DataError
    from stages import train_attention_regression

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="tuples.parquet: missing; run prepare_referit"):
        train_attention_regression.run(tiny_config(), "attention_full")


def test_frozen_backbone_caches_standardised_features(tiny_world):
    """The paper's frozen backbone: features computed once per image, standardised per channel with
    training statistics that the checkpoint carries to evaluation."""
    import torch

    from stages import evaluate_attention_regression, train_attention_regression

    raw = tiny_config().model_dump()
    raw["attention_regression"]["freeze_backbone"] = True
    cfg = parse_config(raw)
    train_attention_regression.run(cfg, "attention_full")
    state = torch.load(tiny_world / "models/attention_regression/attention_full/checkpoint.pt", weights_only=True)["model"]
    assert not torch.equal(state["feature_std"], torch.ones_like(state["feature_std"]))
    assert state["feature_mean"].shape == (1, 128, 1, 1)  # the tiny backbone's channels
    metrics = evaluate_attention_regression.run(cfg, "attention_full")
    assert metrics["test/queries"] == 16


def test_a_checkpoint_left_by_other_data_or_params_is_set_aside(tiny_world, caplog):
    from stages import train_attention_regression

    cfg = tiny_config()
    train_attention_regression.run(cfg, "attention_full")
    folder = tiny_world / "models/attention_regression/attention_full"
    # The same params, the data changed outside DVC: the finished checkpoint must not be reused.
    tuples = tiny_world / "data/prepare_referit/referit/tuples.parquet"
    df = pd.read_parquet(tuples)
    df.loc[0, "expression"] = "the red square"
    df.to_parquet(tuples, index=False)
    with caplog.at_level("WARNING"):
        retrained = train_attention_regression.run(cfg, "attention_full")
    assert "another config/seed/model" in caplog.text and "discarded" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]
    assert retrained["train/steps"] == 12
    # A model param that leaves every tensor shape alone (dropout) is part of the key too.
    raw = cfg.model_dump()
    raw["attention_regression"]["model"]["dropout"] = 0.2
    caplog.clear()
    with caplog.at_level("WARNING"):
        train_attention_regression.run(parse_config(raw), "attention_full")
    assert "another config/seed/model" in caplog.text
