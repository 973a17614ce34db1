"""The GRN recipe's data side on hand-made benchmarks: query checks and their counted skips, the test corpus of
both settings (targets, the query region excluded), RPN positives by IoU, in-batch negatives, <unk> counting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from refexp.data.skips import DataError, SkipCounter
from refexp.text.vocab import Vocab
from refexp.training import grn
from tests.conftest import tiny_config

C, K = 2, 3


def corpus_frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (region_id, image_id, split, x1, y1, x2, y2, expression)."""
    df = pd.DataFrame(rows, columns=["region_id", "image_id", "split", "x1", "y1", "x2", "y2", "expression"])
    df["image_path"] = "img/" + df["image_id"] + ".jpg"
    return df


CORPUS = corpus_frame([
    ("r0", "a", "test", 0, 0, 9, 9, "a man on a horse"),
    ("r1", "b", "test", 0, 0, 9, 9, "a man riding a horse"),
    ("r2", "b", "test", 20, 20, 29, 29, "a red car"),
    ("r3", "c", "test", 0, 0, 19, 19, "man on horse"),
    ("r4", "d", "train", 0, 0, 9, 9, "a man on a horse"),
    ("r5", "e", "train", 0, 0, 9, 9, "a dog on grass"),
])
QUERIES = pd.DataFrame({
    "set_id": [0, 1, 2, 3, 4],
    "query_region_id": ["r0", "r2", "rX", "r4", "r5"],
    "image_id": ["a", "b", "?", "d", "e"],
    "split": ["test", "test", "test", "train", "train"],
    # r2's only target is a train region (another split); rX is not in the corpus.
    "target_region_ids": [["r1", "r3"], ["r4"], ["r1"], ["r0", "r5"], ["r9"]],
})


def data(**kw) -> grn.RetrievalData:
    return grn.RetrievalData(CORPUS, torch.randn(len(CORPUS), C, K, K), QUERIES, **kw)


def test_split_queries_counts_every_bad_query():
    skips = SkipCounter()
    t = grn.split_queries(data(), "test", skips)
    assert list(t.queries["query_region_id"]) == ["r0"]
    assert t.query_row.tolist() == [0] and [r.tolist() for r in t.target_rows] == [[1, 3]]
    assert skips.counts == {"targets_in_other_split": 1, "query_without_target_in_split": 1,
                            "query_region_not_in_corpus": 1}
    assert skips.inputs["queries"] == 3
    train = grn.split_queries(data(), "train", SkipCounter())
    # r4's target r0 is a test region: dropped and counted, r5 kept; r5's only target is unknown.
    assert [r.tolist() for r in train.target_rows] == [[5]]


def test_gt_test_corpus_targets_and_the_query_excluded():
    d = data()
    t = grn.split_queries(d, "test", SkipCounter())
    cands = grn.test_corpus(d, t, "gt", 0.5)
    assert torch.equal(cands.maps, d.features[:4])
    assert list(cands.table["region_id"]) == ["r0", "r1", "r2", "r3"]  # every test region, not only set members
    assert cands.is_target.tolist() == [[False, True, False, True]]
    assert cands.excluded.tolist() == [[True, False, False, False]]


def test_empty_test_corpus_is_a_clear_error():
    d = data()
    d.corpus = CORPUS.assign(split="train")
    with pytest.raises(DataError, match="empty test corpus"):
        grn.test_corpus(d, grn.split_queries(data(), "test", SkipCounter()), "gt", 0.5)


def proposals_frame() -> tuple[pd.DataFrame, torch.Tensor]:
    props = pd.DataFrame({
        "image_id": ["a", "b", "b", "b", "c", "c", "d"],
        "x1": [0, 1, 20, 50, 0, 0, 0], "y1": [0, 1, 20, 50, 0, 0, 0],
        "x2": [9, 9, 29, 60, 19, 9, 9], "y2": [9, 9, 29, 60, 19, 9, 9],
        "split": ["test"] * 6 + ["train"]})
    return props, torch.randn(len(props), C, K, K)


def test_rpn_targets_are_proposals_overlapping_a_target():
    props, feats = proposals_frame()
    d = data(proposals=props, proposal_features=feats)
    t = grn.split_queries(d, "test", SkipCounter())
    cands = grn.test_corpus(d, t, "rpn", 0.5)
    assert len(cands.table) == 6  # the test images' proposals only
    # Inclusive boxes: prop 1 (1..9) vs r1 (0..9): IoU 81/100 > 0.5 -> target; prop 2 is r2, not a target;
    # prop 4 matches r3 exactly; prop 5 (0..9 in c) vs r3 (0..19): IoU 0.25 -> not; prop 0 is the query's.
    assert cands.is_target.tolist() == [[False, True, False, False, True, False]]
    assert cands.excluded.tolist() == [[True, False, False, False, False, False]]


def test_rpn_training_pairs_use_matching_proposals_and_count_the_rest():
    props, feats = proposals_frame()
    d = data(proposals=props, proposal_features=feats)
    vocab = Vocab.build([["a", "man", "on", "horse"]])
    skips = SkipCounter()
    cfg = tiny_config()
    pairs = grn.training_pairs(d, cfg.grn, "gt", vocab, 20, skips, Path("queries.parquet"))
    assert len(pairs) == 1 and torch.equal(pairs.positive_maps[0], d.features[5])  # r4 -> r5
    # r5 has no proposal above 0.7 in image e: the error names the proposals file
    with pytest.raises(DataError, match=r"proposals\.parquet.*no training pairs"):
        grn.training_pairs(d, cfg.grn, "rpn", vocab, 20, SkipCounter(), Path("data/x/proposals.parquet"))


def test_batch_negatives_never_pick_the_same_set():
    torch.manual_seed(0)
    sets = torch.tensor([0, 0, 1, 2, 3, 3])
    neg = grn.batch_negatives(sets, 3)
    assert neg.shape == (6, 3)
    assert (sets[neg] != sets[:, None]).all()
    assert all(len(set(row.tolist())) == 3 for row in neg)  # distinct when the batch allows it
    few = grn.batch_negatives(torch.tensor([0, 1]), 3)  # with replacement when it does not
    assert (few == torch.tensor([[1], [0]])).all()
    with pytest.raises(ValueError, match="single set"):
        grn.batch_negatives(torch.tensor([4, 4]), 1)


def test_encode_counts_expressions_without_a_known_word():
    vocab = Vocab.build([["man", "horse"]])
    tokens, lengths, unknown = grn.encode(["a man", "zebra stripes", ""], vocab, 20)
    assert lengths.tolist() == [2, 2, 1] and unknown == 2
    assert tokens[1].tolist() == [vocab.unk_id, vocab.unk_id]


def test_vocabulary_is_train_words_seen_more_than_once():
    vocab = grn.build_vocab(CORPUS, 2)
    assert set(vocab.words[4:]) == {"a", "on"}  # train: "a man on a horse", "a dog on grass"
    assert "horse" not in vocab.words and np.all([w in vocab.words for w in ("<unk>", "<pad>")])
