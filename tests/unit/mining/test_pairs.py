"""mine_pairs gives exactly the pairs of a brute-force pycocoevalcap run (BLEU and METEOR)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from refexp.mining import PAIR_COLUMNS, mine_pairs
from refexp.mining.reference import brute_force_pairs as brute_force
from refexp.text.bleu import normalize
from tests.unit.mining.conftest import real_corpus


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == PAIR_COLUMNS
    assert len(got) == len(expected)
    for col in PAIR_COLUMNS:
        assert np.array_equal(got[col].to_numpy(), expected[col].to_numpy()), col


@pytest.mark.shared
@pytest.mark.slow
def test_mine_pairs_equals_brute_force_pycocoevalcap(meteor_pool):
    df = real_corpus(n_vg=700, n_referit=300, n_perturbed=200, seed=3)
    expected = brute_force(df)
    got = mine_pairs(df, meteor=meteor_pool)
    assert len(expected) > 100 and 10 < expected.kept.sum() < len(expected)
    assert_same(got, expected)


@pytest.mark.shared
@pytest.mark.slow
def test_small_corpus_equals_brute_force_and_counts_add_up(meteor_pool):
    df = real_corpus(n_vg=250, n_referit=100, n_perturbed=80, seed=5)
    expected = brute_force(df)
    got = mine_pairs(df, meteor=meteor_pool)
    assert len(expected) > 20
    assert_same(got, expected)
    stats = got.attrs["stats"]
    assert stats["pairs_bleu"] == len(got) and stats["pairs_kept"] == int(got.kept.sum())
    assert stats["candidates"] < len(df) * (len(df) - 1) // 20  # far from all pairs


def test_identical_phrases_pair_across_images_only(meteor_pool):
    df = pd.DataFrame({"image_id": [1, 2, 1, 3, 4, 5, 6],
                       "phrase": ["A man riding a horse.", "a man riding a horse", "a man  riding a HORSE",
                                  "", "   ", "café café", "dog"]})
    got = mine_pairs(df, meteor=meteor_pool)
    assert list(zip(got.a, got.b)) == [(0, 1), (1, 2)]  # rows 0 and 2 share image 1
    assert got.kept.all() and (got.meteor_ab == 1.0).all()
    # empty, whitespace, non-ASCII-only and one-word phrases never pass (scored 0-ish, no error)


@pytest.mark.shared
def test_partitioned_on_dask_equals_single_process(meteor_pool):
    from distributed import Client, LocalCluster

    df = real_corpus(n_vg=600, n_referit=300, n_perturbed=300, seed=7)
    single = mine_pairs(df, meteor=meteor_pool)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        parted = mine_pairs(df, meteor=meteor_pool, n_blocks=5, client=client)
    blocks = mine_pairs(df, meteor=meteor_pool, n_blocks=7)
    assert len(single) > 50
    assert_same(parted, single)
    assert_same(blocks, single)


@pytest.mark.shared
@pytest.mark.parametrize("threshold,rule", [(0.7, "either"), (0.5, "both"), (0.85, "both"), (0.4, "either")])
def test_bleu_step_complete_for_other_thresholds_and_rules(threshold, rule):
    """The candidate bound is derived from the params, so other thresholds/rules stay exact too
    (checked against every pair scored with the bit-identical scalar BLEU-2)."""
    from refexp.mining import bleu_pairs
    from refexp.text.bleu import passes, sentence_bleu2

    df = real_corpus(n_vg=250, n_referit=150, n_perturbed=100, seed=13)
    norm = [normalize(p) for p in df["phrase"]]
    img = df["image_id"].tolist()
    expected = []
    for i in range(len(df)):
        for j in range(i + 1, len(df)):
            if img[i] != img[j]:
                ab, ba = sentence_bleu2(norm[i], norm[j]), sentence_bleu2(norm[j], norm[i])
                if passes(ab, ba, threshold, rule):
                    expected.append((i, j, ab, ba))
    step = bleu_pairs(df, bleu_threshold=threshold, rule=rule)
    order = np.lexsort((step.b, step.a))
    got = list(zip(step.a[order].tolist(), step.b[order].tolist(), step.bleu_ab[order].tolist(),
                   step.bleu_ba[order].tolist()))
    assert len(expected) > 10
    assert got == expected
