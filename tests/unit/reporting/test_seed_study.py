"""The seed study's report for the vision-only/text-only paper: its claims per dataset, the paper's
numbers beside our rows, and the claims judged over constructed per-seed scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from refexp.config import parse_config
from refexp.reporting import seed_study as report
from tests.unit.training.test_seed_study import params


@pytest.fixture
def cfg():
    return parse_config(params())


def test_claims_per_dataset(cfg):
    """baseline < word embedding < synthesized < full, category < full and baseline < full; ReferIt has the
    first step only."""
    assert report.claims(cfg, "vision_text_only") == [
        ("refcoco_embedding", "refcoco_baseline"), ("refcoco_synthesized", "refcoco_embedding"),
        ("refcoco_full", "refcoco_synthesized"), ("refcoco_full", "refcoco_category"),
        ("refcoco_full", "refcoco_baseline"), ("referit_embedding", "referit_baseline")]


def test_a_variant_that_is_no_row_of_the_paper_is_in_no_claim(cfg):
    """Learned embeddings with synthesized data is no row of the paper, and a second variant of a row is
    not the paper's row (the first in params order is, as in the model's report)."""
    raw = params()
    v = raw["vision_text_only"]
    raw["vision_text_only"] = {**v, "variants": {**v["variants"], "refcoco_learned_synthesized": {
        "dataset": "refcoco", "synthesized": True}, "refcoco_embedding_again": {"dataset": "refcoco", "embedding": "glove"}}}
    more = parse_config(raw)
    assert report.claims(more, "vision_text_only") == report.claims(cfg, "vision_text_only")
    assert report.paper_scores("vision_text_only", cfg=more) == report.paper_scores("vision_text_only", cfg=cfg)


def test_paper_numbers_follow_the_dataset_and_the_row(cfg):
    """UNC-Ref (refer dataset refcoco) is Table 2, ReferIt Table 3."""
    prec = report.paper_scores("vision_text_only", cfg=cfg)
    assert prec == {"refcoco_baseline": 26.82, "refcoco_embedding": 26.80, "refcoco_synthesized": 26.92,
                    "refcoco_category": 10.38, "refcoco_full": 27.56, "referit_baseline": 34.02,
                    "referit_embedding": 35.86}
    assert report.paper_scores("vision_text_only", 5, cfg)["refcoco_full"] == 36.05
    # A refer dataset under another key names its refer folder: G-Ref's Table 1.
    raw = params()
    raw["datasets"]["refcoco"] = {**raw["datasets"]["refcoco"], "refer_dataset": "refcocog", "split_by": "google"}
    assert report.paper_scores("vision_text_only", cfg=parse_config(raw))["refcoco_full"] == 21.08


def scores_and_hits(seeds=(0, 1, 2)):
    """Per seed: the full model 10 points above the synthesized row, embedding and baseline alternating."""
    rows, hits = [], []
    base = {"refcoco_baseline": 0.30, "refcoco_embedding": 0.30, "refcoco_synthesized": 0.40, "refcoco_category": 0.20,
            "refcoco_full": 0.50, "referit_baseline": 0.30, "referit_embedding": 0.35}
    for seed in seeds:
        for variant, score in base.items():
            if variant == "refcoco_embedding":
                score += 0.05 if seed % 2 else -0.05
            score += 0.01 * seed
            novel = np.nan if variant.startswith("referit") else score / 3  # ReferIt has no novel-word queries
            rows.append({"model": "vision_text_only", "variant": variant, "seed": seed, "score": score,
                         "overall_iou": score / 2, "novel_words": novel, "train_seconds": 1.0, "eval_seconds": 1.0})
            n = 100
            hit = (np.arange(n) < round(score * n)).astype(np.int8)
            hits.append(pd.DataFrame({"model": "vision_text_only", "variant": variant, "seed": seed,
                                      "image_id": [str(i // 2) for i in range(n)],
                                      "region_id": [str(i) for i in range(n)], "expression": "e", "hit": hit}))
    return pd.DataFrame(rows), pd.concat(hits, ignore_index=True)


def test_claims_judged_over_seeds_and_the_report(cfg, tmp_path):
    scores, hits = scores_and_hits()
    metrics, tables = report.summarise(scores, cfg, hits)
    key = "vision_text_only/claim/refcoco_full>refcoco_synthesized"
    assert metrics[f"{key}/mean"] == pytest.approx(0.10) and metrics[f"{key}/verdict"] == "a > b"
    assert metrics[f"{key}/seeds_ahead"] == 3 and 0 <= metrics[f"{key}/seeds_resolved"] <= 3
    assert metrics["vision_text_only/claim/refcoco_embedding>refcoco_baseline/verdict"] == "not resolved"
    assert metrics["vision_text_only/claim/refcoco_full>refcoco_category/verdict"] == "a > b"
    assert metrics["vision_text_only/refcoco_full/overall_iou/mean"] == pytest.approx(0.255)
    assert metrics["vision_text_only/claim/refcoco_full>refcoco_baseline/verdict"] == "a > b"
    assert len(tables["vision_text_only"]) == 6

    report_path = tmp_path / "seed_study.md"
    report.write_report(cfg, scores, tables, report_path, tmp_path / "figures/scores.png", "make seed-study", 0.0, 60.0)
    text = report_path.read_text()
    section = text.split("## Vision-only and text-only data for segmentation")[1].split("## Scores per seed")[0]
    assert "| `refcoco_full` | 27.56 | 50.00 | 51.00 | 52.00 |" in section  # Table 2's prec@0.5 beside ours
    assert "| `referit_embedding` | 35.86 |" in section
    assert "`refcoco_full` > `refcoco_category`" in section and "`referit_embedding` > `referit_baseline`" in section
    assert "novel-word subset" in section and "novel words %" in section
    assert "| `referit_embedding` | – |" in section and "nan" not in section
    assert "`<dataset>_category`" in text and "vision_text_only.md" in text
    # text_objseg's params (the image side the recipe reads) in the provenance beside the model's own.
    provenance = text.split("## Provenance")[1]
    assert "vision_text_only:" in provenance and "text_objseg:" in provenance
