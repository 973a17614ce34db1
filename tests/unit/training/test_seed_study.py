"""The seed study's vision_text_only rows without training: the recipe's train and evaluate functions
replaced (in this test only) by ones that return constructed metrics and per-query tables, on a
UNC-Ref-like dataset with two evaluation splits and a ReferIt-like one without classes. Also the inputs
checked before any training and the params digest."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from refexp.config import parse_config
from refexp.data.skips import DataError
from refexp.paths import Paths
from refexp.training import seed_study

VARIANTS = {"refcoco_baseline": {"dataset": "refcoco"},
            "refcoco_embedding": {"dataset": "refcoco", "embedding": "glove"},
            "refcoco_synthesized": {"dataset": "refcoco", "embedding": "glove", "synthesized": True},
            "referit_baseline": {"dataset": "referit"},
            "referit_embedding": {"dataset": "referit", "embedding": "glove"}}


def params(**text_objseg) -> dict:
    return {
        "datasets": {"refcoco": {"format": "refer", "source": "synthetic", "split_by": "unc"},
                     "referit": {"format": "referit", "source": "synthetic"},
                     "coco": {"format": "coco", "source": "synthetic"},
                     "visual_genome": {"format": "visual_genome", "source": "synthetic"}},
        "synth_expressions": {"datasets": ["coco"]},
        "text_objseg": text_objseg,
        "vision_text_only": {
            "datasets": {"refcoco": {"eval_splits": ["val", "testA"]},
                         "referit": {"eval_splits": ["test"], "train_split": "trainval", "classes": False}},
            "variants": VARIANTS, "full": {"refcoco": "refcoco_synthesized"}},
        "seed_study": {"seeds": [0, 1], "models": ["vision_text_only"]}}


@pytest.fixture
def cfg():
    return parse_config(params())


def per_query(splits: dict[str, list[float]]) -> pd.DataFrame:
    """evaluate's table: one row per query of each split, with its mask IoU."""
    rows = [{"image_id": f"{split}{i // 2}", "image_path": f"images/{split}{i // 2}.png", "region_id": f"{split}-{i}",
             "expression": f"thing {i}", "category": "circle", "split": split, "novel_words": i % 2 == 0, "iou": iou}
            for split, ious in splits.items() for i, iou in enumerate(ious)]
    return pd.DataFrame(rows)


def metrics_of(table: pd.DataFrame) -> dict:
    out = {}
    for split, part in table.groupby("split"):
        out[f"{split}/prec_at_0.5"] = float((part["iou"] >= 0.5).mean())
        out[f"{split}/overall_iou"] = float(part["iou"].mean())
        novel = part[part["novel_words"]]
        out[f"{split}/novel_words/prec_at_0.5"] = float((novel["iou"] >= 0.5).mean())
    return out


# Per row: the IoUs of its dataset's first eval split (refcoco: val; referit: test). Every testA query is hit.
IOUS = {"refcoco_baseline": [0.1, 0.6, 0.2, 0.3], "refcoco_embedding": [0.6, 0.6, 0.2, 0.3],
        "refcoco_synthesized": [0.6, 0.6, 0.7, 0.3], "refcoco_category": [0.0, 0.0, 0.0, 0.9],
        "refcoco_full": [0.6, 0.9, 0.7, 0.8], "referit_baseline": [0.2, 0.7, 0.1],
        "referit_embedding": [0.8, 0.7, 0.1]}


@pytest.fixture
def fake_recipe(monkeypatch):
    """The recipe's functions, recording their calls; the trainings report fixed seconds."""
    from refexp.training import vision_text_only as vto

    calls = []

    def table(row: str, dataset: str) -> pd.DataFrame:
        first = {"refcoco": "val", "referit": "test"}[dataset]
        return per_query({first: IOUS[row], **({"testA": [0.9, 0.9, 0.9]} if dataset == "refcoco" else {})})

    def evaluated(row, dataset):
        t = table(row, dataset)
        return metrics_of(t), t

    monkeypatch.setattr(vto, "train_lstm_cnn", lambda cfg, paths, variant, resolution, progress=True: (
        calls.append(("train", variant, resolution)) or {"train/seconds": {"lowres": 1.0, "highres": 2.0}[resolution]}))
    monkeypatch.setattr(vto, "evaluate_lstm_cnn", lambda cfg, paths, variant: (
        calls.append(("evaluate", variant)) or evaluated(variant, cfg.vision_text_only.variants[variant].dataset)))
    monkeypatch.setattr(vto, "train_category_fcn", lambda cfg, paths, progress=True: (
        calls.append(("category_fcn",)) or {"train/seconds": 10.0}))
    monkeypatch.setattr(vto, "train_expression_classifier", lambda cfg, paths, dataset, progress=True: (
        calls.append(("classifier", dataset)) or {"train/seconds": 3.0}))
    monkeypatch.setattr(vto, "train_full", lambda cfg, paths, dataset, progress=True: (
        calls.append(("full", dataset)) or {"train/seconds": 4.0}))
    monkeypatch.setattr(vto, "evaluate_fused", lambda cfg, paths, dataset: (
        calls.append(("evaluate_fused", dataset))
        or {part: evaluated(f"{dataset}_{part}", dataset) for part in ("category", "full")}))
    return calls


def test_vision_text_only_rows_and_hits(cfg, fake_recipe, tmp_path):
    rows, hits = seed_study._vision_text_only_rows(cfg, Paths.from_config(cfg, tmp_path), 3)
    # Each variant low, then high resolution, then evaluated; then the category branch: the FCN once, and
    # per dataset of `full` its classifier, the full model and the fused evaluation (both rows).
    assert fake_recipe == [*[c for v in VARIANTS for c in (("train", v, "lowres"), ("train", v, "highres"),
                                                           ("evaluate", v))],
                           ("category_fcn",), ("classifier", "refcoco"), ("full", "refcoco"),
                           ("evaluate_fused", "refcoco")]
    table = pd.DataFrame(rows).set_index("variant")
    assert table.index.tolist() == [*VARIANTS, "refcoco_category", "refcoco_full"]
    assert (table["model"] == "vision_text_only").all() and (table["seed"] == 3).all()
    # The score: prec@0.5 on the dataset's first eval split (refcoco val, not testA; referit test).
    for row, ious in IOUS.items():
        assert table.loc[row, "score"] == pytest.approx(np.mean(np.array(ious) >= 0.5)), row
        assert table.loc[row, "overall_iou"] == pytest.approx(np.mean(ious)), row
        assert table.loc[row, "novel_words"] == pytest.approx(np.mean(np.array(ious[::2]) >= 0.5)), row
    # Training seconds: low + high resolution; the once-per-seed FCN with the (first) category row.
    assert table.loc["refcoco_baseline", "train_seconds"] == 3.0
    assert table.loc["refcoco_category", "train_seconds"] == 13.0 and table.loc["refcoco_full", "train_seconds"] == 4.0
    # The per-query hits: the first eval split's queries only, hit at mask IoU >= 0.5.
    by_row = {h["variant"].iloc[0]: h for h in hits}
    assert list(by_row) == table.index.tolist()
    full = by_row["refcoco_full"]
    assert full["region_id"].tolist() == [f"val-{i}" for i in range(4)] and full["hit"].tolist() == [1, 1, 1, 1]
    assert by_row["refcoco_category"]["hit"].tolist() == [0, 0, 0, 1]
    assert by_row["referit_baseline"]["image_id"].tolist() == ["test0", "test0", "test1"]
    assert set(pd.concat(hits).columns) == {"model", "variant", "seed", "image_id", "region_id", "expression", "hit"}


def test_vision_text_only_without_a_full_model_trains_no_category_branch(fake_recipe, tmp_path):
    raw = params()
    raw["vision_text_only"] = {**raw["vision_text_only"], "full": {}}
    cfg = parse_config(raw)
    rows, _ = seed_study._vision_text_only_rows(cfg, Paths.from_config(cfg, tmp_path), 0)
    assert [r["variant"] for r in rows] == list(VARIANTS)
    assert not any(c[0] in ("category_fcn", "classifier", "full", "evaluate_fused") for c in fake_recipe)


def test_score_key_and_datasets(cfg):
    assert seed_study.score_key(cfg, "vision_text_only", "refcoco") == "val/prec_at_0.5"
    assert seed_study.score_key(cfg, "vision_text_only", "referit") == "test/prec_at_0.5"
    assert seed_study.score_key(cfg, "text_objseg") == "test/prec_at_0.5"
    assert seed_study.study_datasets(cfg) == ["refcoco", "referit", "coco"]
    both = parse_config({**params(), "seed_study": {"seeds": [0, 1], "models": ["scrc", "grn", "vision_text_only"]}})
    assert seed_study.study_datasets(both) == ["referit", "coco", "visual_genome", "refcoco"]


def test_missing_inputs_are_named_before_any_training(tmp_path):
    """Each table the recipe reads, and text_objseg's backbone weights, in turn."""
    cfg = parse_config(params(backbone="tiny", pretrained=True))
    paths = Paths.from_config(cfg, tmp_path)
    expected = [(paths.tuples("refcoco"), "prepare_refer"), (paths.tuples("referit"), "prepare_referit"),
                (paths.data / "synth_expressions/coco/tuples.parquet", "synth_expressions coco"),
                (paths.data / "prepare_coco/coco/instances.parquet", "prepare_coco coco"),
                (paths.models / "backbone/tiny/backbone.pt", "pretrain_backbone")]
    # (the backbone is checked with each model's inputs, before the recipe's tables)
    order = [expected[4], *expected[:4]]
    for path, hint in order:
        with pytest.raises(DataError, match=hint) as err:
            seed_study._check_inputs(cfg, paths)
        assert err.value.file == str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    seed_study._check_inputs(cfg, paths)


def _digest_before_vision_text_only(cfg, seed: int) -> str:
    """The digest as it was computed before the study covered vision_text_only (no paths)."""
    sections = ("training", "scrc", "attention_regression", "text_objseg", "grn", "run", "pretrain_backbone")
    scores = ("scrc", "attention_regression", "text_objseg", "grn")
    scfg = seed_study.seed_config(cfg, seed)
    dumped = {name: getattr(scfg, name).model_dump(exclude=seed_study.DIGEST_EXCLUDE.get(name))
              for name in sections if name not in scores or name in cfg.seed_study.models}
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_digest_counts_what_vision_text_only_reads():
    def digest(models, text_objseg=None, vision_text_only=None):
        raw = params(**(text_objseg or {}))
        raw["vision_text_only"] = {**raw["vision_text_only"], **(vision_text_only or {})}
        raw["seed_study"] = {"seeds": [0, 1], "models": models}
        return seed_study._params_digest(parse_config(raw), 0)

    base = digest(["vision_text_only"])
    assert digest(["vision_text_only"], vision_text_only={"figure_examples": 9}) == base
    assert digest(["vision_text_only"], vision_text_only={"synthesized_ratio": 0.25}) != base
    # text_objseg's image side and schedules count, its own dataset, variants and baselines do not.
    assert digest(["vision_text_only"], {"input_size": 64}) != base
    assert digest(["vision_text_only"], {"highres_training": {"steps": 7}}) != base
    assert digest(["vision_text_only"], {"variants": {"other": {"spatial": 2}}, "dataset": "coco",
                                         "figure_examples": 1, "n_box_proposals": 5}) == base
    # With text_objseg in the study too, its variants count (they are its rows).
    both = digest(["text_objseg", "vision_text_only"])
    assert digest(["text_objseg", "vision_text_only"], {"variants": {"other": {"spatial": 2}}}) != both
    # A study without vision_text_only: its params and text_objseg's do not count, and the digest is the
    # one it had before (the pipeline's stored seeds resume).
    other = digest(["attention_regression"])
    assert digest(["attention_regression"], {"input_size": 64}, {"synthesized_ratio": 0.25}) == other
    for models in (["attention_regression"], ["scrc", "text_objseg", "grn"]):
        cfg = parse_config({**params(), "seed_study": {"seeds": [0, 1], "models": models}})
        assert seed_study._params_digest(cfg, 0) == _digest_before_vision_text_only(cfg, 0)
