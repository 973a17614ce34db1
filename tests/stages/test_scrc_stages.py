"""pretrain_scrc -> train_scrc (every kind of variant) -> evaluate_scrc -> report_scrc, end to end
on a tiny synthetic world (the real generator and prepare code) in a tmp dir."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from refexp.config import parse_config
from refexp.data.prepare import prepare_coco, prepare_referit
from refexp.data.synthetic.generate import generate
from refexp.training.engine import CheckpointError

VARIANTS = {
    "lrcn_retriever": {"use_context": False, "use_spatial": False, "fine_tune": False},
    "scrc_no_context_spatial_transfer": {"use_context": False, "use_spatial": False, "transfer": False},
    "scrc_full": {},
    "scrc_no_context_spatial_subset10": {"use_context": False, "use_spatial": False, "train_fraction": 0.1},
    "scrc_image_free": {"use_box": False, "use_context": False, "transfer": False},
}


def tiny_params() -> dict:
    return {
        "datasets": {"referit": {"format": "referit", "source": "synthetic"},
                     "coco": {"format": "coco", "source": "synthetic"},
                     "visual_genome": {"format": "visual_genome", "source": "synthetic"}},
        "fetch_data": {"datasets": ["referit", "coco"]},
        "training": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 2, "cpu_threads": 1},
        "pretrain_backbone": {"crop_size": 16, "training": {"steps": 3, "batch_size": 4}},
        "scrc": {"backbone": "tiny", "pretrained": True, "image_feature": "pooled", "image_size": 64, "embed_dim": 8, "hidden": 16,
                 "feature_dim": 8, "crop_size": 16, "n_proposals": 12, "figure_examples": 2,
                 "pretrain_training": {"steps": 3}, "training": {}, "variants": VARIANTS},
    }


def prepare_world(root) -> None:
    """The tiny world's prepared tables and its pretrained `tiny` backbone (what pretrained: true reads)."""
    from refexp.paths import Paths
    from refexp.training.backbone import pretrain

    generate(root / "data" / "raw", 10, 0, formats=("referit", "coco"))
    tuples, vocab, _ = prepare_referit(root / "data/raw/referit", "referit", 1, 20, root)
    out = root / "data/prepare_referit/referit"
    out.mkdir(parents=True)
    tuples.to_parquet(out / "tuples.parquet")
    vocab.save(out / "vocab.txt")
    caps, instances, cvocab, _ = prepare_coco(root / "data/raw/coco", "coco", 1, 20, root)
    out = root / "data/prepare_coco/coco"
    out.mkdir(parents=True)
    caps.to_parquet(out / "captions.parquet")
    instances.to_parquet(out / "instances.parquet")
    cvocab.save(out / "vocab.txt")
    cfg = parse_config(tiny_params())
    pretrain(cfg, Paths.from_config(cfg, root), progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("scrc_world")
    prepare_world(root)
    return root


def test_scrc_stages_end_to_end(world, monkeypatch):
    from stages import evaluate_scrc, pretrain_scrc, report_scrc, train_scrc

    monkeypatch.chdir(world)
    cfg = parse_config(tiny_params())
    pre = pretrain_scrc.run(cfg)
    assert pre["train/steps"] == 3 and (world / "models/scrc/pretrained/model.pt").exists()
    tuples = pd.read_parquet(world / "data/prepare_referit/referit/tuples.parquet")
    for variant in VARIANTS:
        m = train_scrc.run(cfg, variant)
        assert m["train/steps"] == (0 if variant == "lrcn_retriever" else 4)
        if variant == "scrc_full":  # the paper fine-tunes on trainval
            assert m["train/tuples"] == int(tuples["split"].isin(["train", "val"]).sum()) > int((tuples["split"] == "train").sum())
        e = evaluate_scrc.run(cfg, variant)
        for key in ("test/p_at_1", "test/recall_at_1", "test/recall_at_10", "test/oracle_recall_at_100",
                    "test/chance_p_at_1", "test/p_at_1_length_normalised"):
            assert 0.0 <= e[key] <= 1.0, key
        assert e["test/p_at_1"] == e["test/p_at_1_length_normalised"]
        # The synthetic world writes proposals/<id>.txt by selective search, and says so.
        assert e["test/proposal_source"] == "selective_search_fast"
        assert any(k.startswith("test/p_at_1/") for k in e)
        saved = json.loads((world / f"reports/metrics/evaluate_scrc/{variant}.json").read_text())
        assert saved["test/queries"] == e["test/queries"] > 0
        pred = pd.read_parquet(world / f"data/evaluate_scrc/{variant}/predictions.parquet")
        assert len(pred) == e["test/queries"]
    # R@K on a seeded subset of the queries: only those carry proposal scores, P@1 still uses all.
    subset_cfg = parse_config({**tiny_params(), "scrc": {**tiny_params()["scrc"], "proposal_queries": 3}})
    e = evaluate_scrc.run(subset_cfg, "scrc_full")
    pred = pd.read_parquet(world / "data/evaluate_scrc/scrc_full/predictions.parquet")
    assert e["test/proposal_queries"] == 3 == pred["proposals_scored"].sum() < e["test/queries"] == len(pred)
    assert all(len(x) > 0 for x in pred.loc[pred["proposals_scored"], "proposals_ll"])
    assert all(len(x) == 0 for x in pred.loc[~pred["proposals_scored"], "proposals_ll"])
    assert (world / "reports/plots/train_scrc/scrc_full.csv").exists()
    r = report_scrc.run(cfg)
    text = (world / "reports/scrc.md").read_text()
    assert r["variants_reported"] == len(VARIANTS)
    assert "72.74%" in text and "SCRC (w/o context, spatial, transfer)" in text
    # The report opens with what it ran on and names the proposals truthfully.
    assert text.index("## What this ran on") < text.index("## Table 1") < text.index("## Provenance")
    assert "synthetic data (the embedded world)" in text and "pretrain_backbone checkpoint" in text
    assert "`selective_search_fast`: OpenCV selective search" in text and "59.38%" in text
    assert (world / "reports/figures/scrc/training_curves.png").exists()


def test_a_retrained_backbone_is_never_resumed_from_an_old_checkpoint(world, monkeypatch, caplog):
    """The pretrained backbone is part of SCRC's checkpoint key: after pretrain_backbone changes the
    weights, a finished persisted checkpoint is set aside and the variant trains again."""
    import torch

    from stages import train_scrc

    monkeypatch.chdir(world)
    params = tiny_params()
    params["scrc"]["variants"] = {"scrc_keyed": {"transfer": False}}
    cfg = parse_config(params)
    out = world / "models/scrc/scrc_keyed"
    shutil.rmtree(out, ignore_errors=True)
    train_scrc.run(cfg, "scrc_keyed")
    first = torch.load(out / "model.pt", weights_only=True)
    with caplog.at_level("WARNING"):
        train_scrc.run(cfg, "scrc_keyed")  # unchanged inputs: resumes the finished run, same weights
    assert "discarded" not in caplog.text
    weights = world / "models/backbone/tiny/backbone.pt"
    original = weights.read_bytes()
    try:
        state = torch.load(weights, weights_only=True)
        torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, weights)
        with caplog.at_level("WARNING"):
            train_scrc.run(cfg, "scrc_keyed")
        assert "discarded, training from step 0" in caplog.text
        second = torch.load(out / "model.pt", weights_only=True)
        assert not all(torch.equal(first[k], second[k]) for k in first)
    finally:
        weights.write_bytes(original)


def test_train_scrc_refuses_a_corrupt_checkpoint(world, monkeypatch):
    from stages import train_scrc

    monkeypatch.chdir(world)
    ckpt = world / "models/scrc/scrc_corrupt/checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"garbage")
    params = tiny_params()
    params["scrc"]["variants"] = {"scrc_corrupt": {"transfer": False}}
    with pytest.raises(CheckpointError, match="corrupt"):
        train_scrc.run(parse_config(params), "scrc_corrupt")


def test_feature_cache_and_frozen_scrc(world, monkeypatch, tmp_path):
    """extract_features writes a memory-mapped cache whose rows equal the model's own crop path;
    SCRC with scrc.frozen_backbone reads it for pretraining, fine-tuning and evaluation."""
    import numpy as np
    import torch

    from refexp.models.backbones import build_backbone
    from refexp.models.layers import crop_and_resize
    from refexp.data.torch_datasets import ImageStore
    from refexp.training.features import FeatureCache, FeatureCacheError
    from stages import evaluate_scrc, extract_features, pretrain_scrc, train_scrc

    monkeypatch.chdir(world)
    params = tiny_params()
    params["extract_features"] = {"datasets": ["referit", "coco"], "crop_size": 16, "n_proposals": 12, "batch_size": 64}
    params["scrc"]["frozen_backbone"] = True
    params["scrc"]["variants"] = {"scrc_full": {}}
    cfg = parse_config(params)
    torch.manual_seed(5)
    m = extract_features.run(cfg, "referit")
    assert m["crops"] > 0 and m["channels"] == 128
    extract_features.run(cfg, "coco")
    cache = FeatureCache.open(world / "data/extract_features/referit", "tiny", 16)
    assert isinstance(cache.features, np.memmap)
    # Same numbers as the model's path with the same (seeded) backbone.
    torch.manual_seed(5)
    net = build_backbone("tiny", False).eval()
    tuples = pd.read_parquet(world / "data/prepare_referit/referit/tuples.parquet")
    row = tuples.iloc[0]
    store = ImageStore([row["image_path"]], world, 128)
    scale = 128 / row["image_width"]
    box = torch.tensor([[row["x1"] * scale, row["y1"] * scale, (row["x2"] + 1) * scale, (row["y2"] + 1) * scale]])
    with torch.no_grad():
        expected = net(crop_and_resize(store.images, box, 16)).mean(dim=(2, 3))[0].numpy()
    got = cache.lookup(row["image_path"], np.array([[row["x1"], row["y1"], row["x2"], row["y2"]]]))[0]
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)  # stored as float16
    with pytest.raises(FeatureCacheError, match="backbone='tiny'"):
        FeatureCache.open(world / "data/extract_features/referit", "vgg16", 16)

    pretrain_scrc.run(cfg)
    assert train_scrc.run(cfg, "scrc_full")["train/steps"] == 4
    e = evaluate_scrc.run(cfg, "scrc_full")
    assert 0.0 <= e["test/p_at_1"] <= 1.0 and e["test/queries"] > 0


@pytest.mark.slow
def test_killed_train_scrc_resumes_to_the_same_model_and_metrics(world, monkeypatch):
    """SIGKILL `python -m stages.train_scrc` mid-run, run the stage again: it resumes from the
    checkpoint and ends with the weights and test metrics of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import torch
    import yaml

    from refexp.training.engine import load_checkpoint
    from stages import evaluate_scrc, pretrain_scrc, train_scrc

    monkeypatch.chdir(world)
    shutil.rmtree(world / "models/scrc/scrc_full", ignore_errors=True)  # trained by an earlier test
    params = tiny_params()
    params["training"].update({"steps": 150, "checkpoint_every": 10})
    params["scrc"]["variants"] = {"scrc_full": {}, "scrc_full_reference": {}}
    (world / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = parse_config(params)
    pretrain_scrc.run(cfg)
    reference = train_scrc.run(cfg, "scrc_full_reference")
    assert reference["train/steps"] == 150

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_scrc", "scrc_full"], cwd=world,
                            env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = world / "models/scrc/scrc_full/checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                if load_checkpoint(ckpt)["step"] >= 20:
                    break
            except Exception:  # being replaced right now
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 20 <= killed_at < 150, killed_at
    assert not (world / "models/scrc/scrc_full/model.pt").exists()

    resumed = train_scrc.run(cfg, "scrc_full")
    assert resumed["train/steps"] == 150 and resumed["train/loss"] == reference["train/loss"]
    a = torch.load(world / "models/scrc/scrc_full/model.pt", weights_only=True)
    b = torch.load(world / "models/scrc/scrc_full_reference/model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = evaluate_scrc.run(cfg, "scrc_full"), evaluate_scrc.run(cfg, "scrc_full_reference")
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("eval/")}
    assert strip(ea) == strip(eb)
