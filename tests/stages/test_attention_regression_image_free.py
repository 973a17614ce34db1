"""referit_image_free end to end on a tiny image-free table (tmp dir), and its baselines by hand."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from refexp.config import parse_config
from tests.stages.test_attention_regression import VARIANTS, tiny_config, write_tiny_world


def image_free_config():
    raw = tiny_config().model_dump()
    raw["datasets"]["referit_real"] = {"format": "referit", "source": "local", "root": "unused"}
    raw["attention_regression"]["variants"] = VARIANTS
    raw["scrc"] = {"backbone": "tiny", "pretrained": False, "image_feature": "pooled", "embed_dim": 8, "hidden": 12,
                   "feature_dim": 8, "training": {"steps": 6},
                   "variants": {"scrc_image_free": {"use_box": False, "use_context": False, "transfer": False}}}
    raw["referit_image_free"] = {"dataset": "referit_real", "regression_training": {"steps": 10},
                                 "scrc_training": {"steps": 6}}
    return parse_config(raw)


@pytest.fixture
def image_free_world(tmp_path, monkeypatch):
    write_tiny_world(tmp_path)
    src = tmp_path / "data/prepare_referit/referit"
    dst = tmp_path / "data/prepare_referit/referit_real"
    dst.mkdir(parents=True)
    df = pd.read_parquet(src / "tuples.parquet")
    df["image_path"] = pd.Series([pd.NA] * len(df), dtype="string")  # the real annotations have no images
    df["dataset"] = "referit_real"
    df.to_parquet(dst / "tuples.parquet", index=False)
    (dst / "vocab.txt").write_text((src / "vocab.txt").read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_image_free_experiment_writes_metrics_and_report(image_free_world):
    from stages import referit_image_free

    metrics = referit_image_free.run(image_free_config())
    saved = json.loads((image_free_world / "reports/metrics/referit_image_free.json").read_text())
    assert saved["test/tuples"] == metrics["test/tuples"] == 16
    for key in ("test/chance_p_at_1", "test/p_at_1", "test/constant_box_accuracy", "test/accuracy"):
        assert 0.0 <= saved[key] <= 1.0, key
    # Each test image has a red and a green 12x12 square in different corners (no overlap): chance 1/2.
    assert saved["test/chance_p_at_1"] == pytest.approx(0.5)
    assert saved["scrc/chance_p_at_1_check"] == pytest.approx(0.5)
    # 12x12 squares in a 32x32 image cover 14% of it: every target is large, so the size split holds
    # one group, equal to the overall numbers.
    assert saved["test/chance_p_at_1/large_target"] == pytest.approx(0.5)
    assert "test/chance_p_at_1/small_target" not in saved
    assert saved["test/constant_box_accuracy/large_target"] == saved["test/constant_box_accuracy"]
    assert saved["test/accuracy/large_target"] == saved["test/accuracy"]
    # The constant box is the mean of the corner boxes; it is computed from train only.
    assert len(saved["constant_box/normalised_xywh"]) == 4
    assert saved["constant_box/normalised_xywh"][2] == pytest.approx(12 / 32)
    report = (image_free_world / "reports/referit_image_free.md").read_text()
    assert "make referit-image-free" in report and "test/chance_p_at_1" in report
    # The run's models live apart from the embedded runs of the same variants.
    assert (image_free_world / "models/referit_image_free/regression/text_only/checkpoint.pt").exists()
    assert not (image_free_world / "models/attention_regression").exists()


def test_image_reading_variant_is_refused(image_free_world):
    from refexp.config import ConfigError
    from stages import referit_image_free

    raw = image_free_config().model_dump()
    raw["referit_image_free"]["regression_variant"] = "attention_full"
    with pytest.raises(ConfigError, match="reads images"):
        referit_image_free.run(parse_config(raw))
