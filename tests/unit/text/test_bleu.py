"""BLEU-2 of the mining rule equals pycocoevalcap's sentence BLEU-2, bit for bit."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu

from refexp.mining.reference import perturb
from refexp.text.bleu import (
    bleu2_arrays,
    bleu2_from_counts,
    mining_tokens,
    normalize,
    overlap_counts,
    passes,
    required_bigram_overlap,
    sentence_bleu2,
)
from tests.conftest import require_shared


def _real_phrases() -> list[str]:
    vg = json.loads(require_shared("visual_genome", "v1.2", "region_descriptions.json_samples.json").read_text())
    referit = json.loads(require_shared("referit", "annotations", "referit_query_all.json").read_text())
    phrases = [r["phrase"] for im in vg for r in im["regions"]]
    phrases += [p for descs in referit.values() for p in descs]
    return phrases


def pycoco_bleu2(hyps: list[str], refs: list[str]) -> np.ndarray:
    _, per_sentence = Bleu(2).compute_score({i: [r] for i, r in enumerate(refs)},
                                            {i: [h] for i, h in enumerate(hyps)}, verbose=0)
    return np.asarray(per_sentence[1])


def test_tokens_are_ascii_lowercase_words_and_digits():
    assert mining_tokens("Man's hat, café!  2 dogs") == ["man", "s", "hat", "caf", "2", "dogs"]
    assert normalize("  A  Red\tcar. ") == "a red car"
    assert normalize("   ") == ""


def test_hand_computed_scores():
    # hyp "a b c" vs ref "a b d": p1 = 2/3, p2 = 1/2, no brevity penalty -> sqrt(1/3)
    assert sentence_bleu2("a b c", "a b d") == pytest.approx((1 / 3) ** 0.5, rel=1e-8)
    # hyp shorter than ref: BP = exp(1 - 4/3)
    assert sentence_bleu2("a b c", "a b c d") == pytest.approx(np.exp(1 - 4 / 3), rel=1e-8)
    # one-token hypothesis: the empty 2-gram factor (1e-15 / 1e-9) sinks it
    assert sentence_bleu2("dog", "dog") < 1e-2
    # clipping: "the the the" vs "the cat": 1 clipped unigram, 0 bigrams
    assert overlap_counts("the the the", "the cat") == (1, 0)


@pytest.mark.shared
def test_bleu2_equals_pycocoevalcap_on_thousands_of_real_pairs():
    rng = random.Random(0)
    phrases = [normalize(p) for p in _real_phrases()]
    hyps, refs = [], []
    for _ in range(3000):  # unrelated pairs
        hyps.append(rng.choice(phrases))
        refs.append(rng.choice(phrases))
    for _ in range(3000):  # near pairs, scores around the 0.7 threshold
        p = rng.choice(phrases)
        q = " ".join(perturb(p.split(), rng))
        hyps.append(p)
        refs.append(q)
        hyps.append(q)
        refs.append(p)
    expected = pycoco_bleu2(hyps, refs)
    scalar = np.array([sentence_bleu2(h, r) for h, r in zip(hyps, refs)])
    counts = np.array([overlap_counts(h, r) for h, r in zip(hyps, refs)])
    lens_h = np.array([len(h.split()) for h in hyps])
    lens_r = np.array([len(r.split()) for r in refs])
    vector = bleu2_arrays(counts[:, 0], counts[:, 1], lens_h, lens_r)
    assert np.array_equal(scalar, expected)  # bit-identical, not approx
    assert np.array_equal(vector, expected)
    assert ((expected > 0.6) & (expected < 0.8)).sum() > 500  # the threshold zone is exercised


@pytest.mark.shared
def test_required_overlap_bounds_every_passing_real_pair():
    rng = random.Random(1)
    phrases = [normalize(p) for p in _real_phrases()]
    req = required_bigram_overlap(80, 0.7, "both")
    n_pass = 0
    for _ in range(4000):
        p = rng.choice(phrases)
        q = " ".join(perturb(p.split(), rng))
        la, lb = len(p.split()), len(q.split())
        if max(la, lb) > 80:
            continue
        c1, c2 = overlap_counts(p, q)
        if passes(sentence_bleu2(p, q), sentence_bleu2(q, p), 0.7, "both"):
            n_pass += 1
            assert req[la, lb] >= 0 and c2 >= req[la, lb]
    assert n_pass > 500


def test_required_overlap_table_is_tight():
    """req[la, lb] passes with c1 at its maximum and req - 1 does not (both rules)."""
    for rule in ("both", "either"):
        req = required_bigram_overlap(30, 0.7, rule)
        for la in range(31):
            for lb in range(31):
                c1 = min(la, lb)
                top = max(0, c1 - 1)

                def ok(c2):
                    return passes(bleu2_from_counts(c1, c2, la, lb), bleu2_from_counts(c1, c2, lb, la), 0.7, rule)

                if req[la, lb] < 0:
                    assert not ok(top)
                else:
                    assert ok(int(req[la, lb]))
                    assert req[la, lb] == 0 or not ok(int(req[la, lb]) - 1)
        assert (req[:2] < 0).all()  # phrases of < 2 tokens never pass
