"""The vision-only/text-only recipe's data side on hand-made prepared tables: the fixed-GloVe vocabulary
takes nothing from evaluation text, the novel-word subset, and the synthesized rows' mixing ratio."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from refexp.data.schema import to_frame
from refexp.paths import Paths
from refexp.text.vocab import Vocab
from refexp.training import vision_text_only as vto
from tests.conftest import tiny_config


def _config(**section):
    """The repo's params (tiny world) with test rows added to vision_text_only."""
    return tiny_config({"vision_text_only": {
        "glove_vocabulary": 500,
        "variants": {"g_base": {"dataset": "refcocog"}, "g_glove": {"dataset": "refcocog", "embedding": "glove"},
                     "g_synth": {"dataset": "refcocog", "embedding": "glove", "synthesized": True}},
        **section}})


def _rows(split, expressions, category="circle"):
    return [{"image_id": str(i), "region_id": f"{split}{i}", "x1": 0, "y1": 0, "x2": 3, "y2": 3,
             "expression": e, "tokens": e.split(), "split": split, "category": category, "mask_rle": "x",
             "image_path": f"img{i}.jpg", "image_width": 4, "image_height": 4}
            for i, e in enumerate(expressions)]


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _config()
    paths = Paths.from_config(cfg)
    df = to_frame(_rows("train", ["the red zzqxw circle", "a big red square"])
                  + _rows("val", ["the crimson qqzzw circle", "a big red square"]))
    paths.tuples("refcocog").parent.mkdir(parents=True)
    df.to_parquet(paths.tuples("refcocog"))
    Vocab.build(df.loc[df["split"] == "train", "tokens"]).save(paths.vocab("refcocog"))
    inst = paths.prepared("coco") / "instances.parquet"
    inst.parent.mkdir(parents=True)
    to_frame(_rows("train", ["x"] * 3, "circle") + _rows("train", ["x"], "square")).to_parquet(inst)
    return cfg, paths


def test_glove_vocabulary_has_glove_words_and_training_words_but_no_evaluation_only_word(prepared):
    cfg, paths = prepared
    vocab, extra = vto.glove_vocab(cfg, paths, "refcocog")
    words = set(vocab.words)
    top = set(vto_top(500))
    # Beyond GloVe's top 500: the training words and class names it lacks (zzqxw: GloVe has no vector at all).
    assert extra == len({"the", "red", "zzqxw", "circle", "a", "big", "square"} - top) and "zzqxw" in words
    assert "qqzzw" not in words  # seen only in val: no vector, no entry
    assert "the" in words and "circle" in words
    assert vocab.words[4:504] == tuple(w for w in vto_top(500))  # GloVe's most frequent words, in file order
    matrix, counts = vto.fixed_glove(cfg, vocab, 50)
    assert matrix.shape == (len(vocab), 50) and counts["embedding/oov_words"] == 1
    assert matrix[vocab.pad_id].abs().sum() == 0
    again, _ = vto.fixed_glove(cfg, vocab, 50)
    assert (again == matrix).all()  # the random vector of the OOV word is seeded


def vto_top(n):
    from refexp.data.glove import most_frequent_words

    return most_frequent_words(None, n)


def test_novel_word_subset_marks_expressions_with_a_word_no_training_expression_has():
    rows = pd.DataFrame({"tokens": [["the", "red", "circle"], ["the", "crimson", "circle"], []]})
    assert vto.novel_word_rows(rows, {"the", "red", "circle"}).tolist() == [False, True, False]


def test_synthesized_rows_follow_the_ratio_are_seeded_and_train_only(prepared, tmp_path):
    cfg, paths = prepared
    synth = paths.stage_dir("synth_expressions", "coco") / "tuples.parquet"
    synth.parent.mkdir(parents=True)
    to_frame(_rows("train", ["circle"] * 10) + _rows("val", ["square"] * 5)).to_parquet(synth)
    rows, path = vto.synthesized_rows(cfg, paths, 8)  # ratio 0.5 -> 4 of the 10 train records
    assert path == synth and len(rows) == 4 and set(rows["split"]) == {"train"}
    again, _ = vto.synthesized_rows(cfg, paths, 8)
    assert rows["region_id"].tolist() == again["region_id"].tolist()
    capped, _ = vto.synthesized_rows(_config(synthesized_ratio=5.0), paths, 8)
    assert len(capped) == 10  # all of them, never more
    train, counts, files = vto.training_rows(cfg, paths, cfg.vision_text_only.variant("g_synth"))
    assert counts["train/referring_rows"] == 2 and counts["train/synthesized_rows"] == 1 and synth in files
    assert len(train) == 3
    _, counts, files = vto.training_rows(cfg, paths, cfg.vision_text_only.variant("g_glove"))
    assert counts["train/synthesized_rows"] == 0 and synth not in files


def test_classes_come_from_the_instance_table_sorted(prepared):
    cfg, paths = prepared
    assert vto.classes(cfg, paths) == ["circle", "square"]


def test_config_rejects_rows_the_paper_does_not_define():
    with pytest.raises(Exception, match="synthesized class-name data needs a dataset with classes"):
        _config(datasets={"refcocog": {"eval_splits": ["val"], "classes": False}},
                variants={"x": {"dataset": "refcocog", "synthesized": True}})
    with pytest.raises(Exception, match="init 'nope' is not a variant"):
        _config(full={"refcocog": "nope"})
    with pytest.raises(Exception, match="unknown dataset 'elsewhere'"):
        _config(datasets={"elsewhere": {"eval_splits": ["val"]}}, variants={})


def test_training_schedules_chain_text_objseg_then_the_papers_overrides():
    cfg = _config(lowres_training={"steps": 7, "lr": 0.004, "warmup_steps": 3})
    merged = vto.training_config(cfg, "lowres")
    segmentation = cfg.training.merged(cfg.text_objseg.lowres_training)
    assert (merged.steps, merged.lr, merged.warmup_steps) == (7, 0.004, 3)  # the paper's overrides win
    assert merged.batch_size == segmentation.batch_size and merged.schedule == segmentation.schedule
    full = vto.training_config(cfg, "full")
    assert np.isclose(full.lr, cfg.vision_text_only.full_training["lr"])
    assert full.batch_size == cfg.training.merged(cfg.text_objseg.highres_training).batch_size


def test_one_pass_gives_both_fused_rows_as_the_model_computes_them():
    import torch

    from refexp.models.text_objseg import SmallFcnMap, TextObjSeg
    from refexp.models.vision_text_only import CategoryFcn, ExpressionClassifier, FusedSegmentation
    from refexp.training.text_objseg import SegmentationExamples

    torch.manual_seed(0)
    model = FusedSegmentation(TextObjSeg(SmallFcnMap("tiny", False, 8), 12, 6, 8, 8, upsample=True),
                              CategoryFcn(SmallFcnMap("tiny", False, 8), 3, 8), ExpressionClassifier(12, 6, 8, 8, 3))
    with torch.no_grad():
        model.alpha_logit.fill_(0.7)
    model.eval()
    examples = SegmentationExamples(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1, 1]),
                                    torch.tensor([[4, 5], [6, 0], [7, 8]]), torch.tensor([2, 1, 2]), None, [])
    got = vto.fused_rows_log_odds(model, examples, 2)
    with torch.no_grad():
        images = examples.images[examples.image_index].float() / 255
        p_full = model(images, examples.tokens, examples.lengths)
        _, p2 = model.branches(images, examples.tokens, examples.lengths)
    for row, p in ((vto.FULL_ROW, p_full), (vto.CATEGORY_ROW, p2)):
        want = torch.logit(p.clamp(1e-6, 1 - 1e-6)).numpy()
        assert np.allclose(np.stack(got[row]), want, atol=1e-4)
    # Another batch size: the same maps up to BLAS summation order.
    assert np.allclose(np.stack(vto.fused_rows_log_odds(model, examples, 3)[vto.FULL_ROW]), np.stack(got[vto.FULL_ROW]),
                       atol=1e-4)
