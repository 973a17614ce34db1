"""Sentence BLEU-2 exactly as pycocoevalcap computes it, for the region-pair mining rule.

The mining rule scores *normalised* strings: `mining_tokens(phrase)` is
`re.findall(r"[a-z0-9]+", phrase.lower())` and the scored string is those tokens
joined by single spaces (so pycocoevalcap's `str.split()` sees the same tokens).

pycocoevalcap (bleu/bleu_scorer.py, `BleuScorer.compute_score`) scores one
hypothesis against one reference as

    b  = (c1 + tiny) / (g1 + small)            c_k: clipped k-gram matches
    b *= (c2 + tiny) / (g2 + small)            g_k: max(0, len(hyp) - k + 1)
    s  = b ** (1/2)
    ratio = (len(hyp) + tiny) / (len(ref) + small)
    if ratio < 1: s *= exp(1 - 1/ratio)        brevity penalty

with tiny = 1e-15 and small = 1e-9. The score depends only on the four integers
(c1, c2, len(hyp), len(ref)), so `bleu2_from_counts` evaluates exactly that
Python float expression once per distinct tuple and maps the results back onto
arrays: the vectorised scores are bit-identical to pycocoevalcap's, with no
per-pair Python loop. c1 and c2 are symmetric in hypothesis and reference (sum
over n-grams of min(count_hyp, count_ref)), so one overlap count serves both
directions.

Completeness bound for candidate generation (`required_bigram_overlap`): the
score is non-decreasing in c1 and c2 (a product of non-decreasing factors, and
IEEE rounding is monotone), and c1 <= min(len_a, len_b). So for lengths (la, lb)
the smallest c2 for which the rule could pass, evaluated with the largest
possible c1, is a lower bound on the bigram overlap of every passing pair. With
threshold 0.7 this implies, per direction, clipped 2-gram precision > 0.49 (so
1-gram precision > 0.49 too), brevity penalty > 0.7 (len ratio < 1/(1-ln 0.7)
~ 1.357), and no pair of phrases shorter than 2 tokens can pass (g2 = 0 gives a
2-gram factor of 1e-6).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Literal

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")
_TINY = 1e-15
_SMALL = 1e-9

DirectionRule = Literal["both", "either"]


def mining_tokens(phrase: str) -> list[str]:
    """The mining rule's tokens: ASCII lowercase words and digits."""
    return _TOKEN.findall(phrase.lower())


def normalize(phrase: str) -> str:
    """The string the mining rule scores: its tokens joined by single spaces."""
    return " ".join(mining_tokens(phrase))


@lru_cache(maxsize=None)
def bleu2_from_counts(c1: int, c2: int, hyp_len: int, ref_len: int) -> float:
    """pycocoevalcap's per-sentence BLEU-2, term by term in the same float order."""
    guess1 = max(0, hyp_len)
    guess2 = max(0, hyp_len - 1)
    bleu = 1.0
    bleu *= (float(c1) + _TINY) / (float(guess1) + _SMALL)
    bleu *= (float(c2) + _TINY) / (float(guess2) + _SMALL)
    score = bleu ** (1.0 / 2)
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        score *= math.exp(1 - 1 / ratio)
    return score


def _ngram_counts(words: list[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
    return counts


def overlap_counts(a: str, b: str) -> tuple[int, int]:
    """Clipped unigram and bigram matches of two scored strings (symmetric)."""
    wa, wb = a.split(), b.split()
    out = []
    for n in (1, 2):
        ca, cb = _ngram_counts(wa, n), _ngram_counts(wb, n)
        out.append(sum(min(c, cb.get(g, 0)) for g, c in ca.items()))
    return out[0], out[1]


def sentence_bleu2(hypothesis: str, reference: str) -> float:
    """BLEU-2 of one scored string against one reference (scalar reference path)."""
    c1, c2 = overlap_counts(hypothesis, reference)
    return bleu2_from_counts(c1, c2, len(hypothesis.split()), len(reference.split()))


def bleu2_arrays(c1: np.ndarray, c2: np.ndarray, hyp_len: np.ndarray, ref_len: np.ndarray) -> np.ndarray:
    """Vectorised exact BLEU-2: one Python evaluation per distinct (c1, c2, len_h, len_r)."""
    c1, c2 = np.asarray(c1, np.int64), np.asarray(c2, np.int64)
    hyp_len, ref_len = np.asarray(hyp_len, np.int64), np.asarray(ref_len, np.int64)
    if c1.size == 0:
        return np.zeros(0, np.float64)
    base = int(max(c1.max(), c2.max(), hyp_len.max(), ref_len.max())) + 1
    if base ** 4 < 2**62:  # one int64 key per tuple: a 1-D unique is much faster than axis=0
        keys = ((c1 * base + c2) * base + hyp_len) * base + ref_len
        uniq, inverse = np.unique(keys, return_inverse=True)
        rows = np.stack([uniq // base**3, uniq // base**2 % base, uniq // base % base, uniq % base], axis=1)
    else:
        rows, inverse = np.unique(np.stack([c1, c2, hyp_len, ref_len], axis=1), axis=0, return_inverse=True)
    values = np.array([bleu2_from_counts(*map(int, row)) for row in rows], dtype=np.float64)
    return values[inverse.reshape(-1)]


def passes(score_ab: np.ndarray | float, score_ba: np.ndarray | float, threshold: float, rule: DirectionRule):
    """The direction rule with a strict threshold."""
    ab, ba = np.asarray(score_ab) > threshold, np.asarray(score_ba) > threshold
    return ab & ba if rule == "both" else ab | ba


def required_bigram_overlap(max_len: int, threshold: float, rule: DirectionRule) -> np.ndarray:
    """req[la, lb] = smallest clipped bigram overlap with which phrases of `la` and `lb`
    tokens could pass the BLEU rule (c1 taken at its maximum min(la, lb)); -1 when no
    overlap can make them pass. A lower bound on c2 of every passing pair (see module doc).
    """
    req = np.full((max_len + 1, max_len + 1), -1, dtype=np.int64)

    def ok(c2: int, la: int, lb: int) -> bool:
        c1 = min(la, lb)
        return bool(passes(bleu2_from_counts(c1, c2, la, lb), bleu2_from_counts(c1, c2, lb, la), threshold, rule))

    for la in range(max_len + 1):
        for lb in range(la, max_len + 1):
            top = max(0, min(la, lb) - 1)  # most bigram matches possible
            if not ok(top, la, lb):
                # With la fixed, both directions' best scores fall as lb grows (the short
                # side's brevity penalty and the long side's precisions), so stop here.
                if lb > la:
                    break
                continue
            lo, hi = 0, top  # smallest c2 in [0, top] that passes; ok() is monotone in c2
            while lo < hi:
                mid = (lo + hi) // 2
                if ok(mid, la, lb):
                    hi = mid
                else:
                    lo = mid + 1
            req[la, lb] = req[lb, la] = lo
    return req
