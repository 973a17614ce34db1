"""The library reference the fast miner is proven against, and the corpus edits used to stress it.

`brute_force_pairs` scores every pair of rows from different images with pycocoevalcap's
Bleu(2) in both directions, then its Meteor on the BLEU survivors: no index, no shortcuts.
Tests and benchmarks/mining.py check that `mine_pairs` returns exactly its rows.
"""
from __future__ import annotations

import random
import time

import numpy as np
import pandas as pd

from refexp.text.bleu import normalize

INSERT_WORDS = ("a", "the", "red", "man", "on")
REPLACE_WORDS = ("a", "the", "blue", "dog", "of")


def perturb(words: list[str], rng: random.Random, insert_words=INSERT_WORDS,
            replace_words=REPLACE_WORDS) -> list[str]:
    """Drop, insert or replace one word: pushes pairs into the threshold zone."""
    words = list(words)
    op = rng.randrange(3)
    if op == 0 and len(words) > 1:
        del words[rng.randrange(len(words))]
    elif op == 1:
        words.insert(rng.randrange(len(words) + 1), rng.choice(insert_words))
    elif words:
        words[rng.randrange(len(words))] = rng.choice(replace_words)
    return words


def brute_force_pairs(df: pd.DataFrame, bleu_threshold: float = 0.7, meteor_threshold: float = 0.6,
                      timings: dict | None = None) -> pd.DataFrame:
    """mine_pairs' output computed the slow way (columns a, b, bleu_ab, bleu_ba, meteor_ab, meteor_ba, kept)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.meteor.meteor import Meteor

    t0 = time.perf_counter()
    norm = [normalize(p) for p in df["phrase"]]
    img = df["image_id"].tolist()
    pairs = [(i, j) for i in range(len(df)) for j in range(i + 1, len(df)) if img[i] != img[j]]
    hyp = {k: [norm[i]] for k, (i, j) in enumerate(pairs)}
    ref = {k: [norm[j]] for k, (i, j) in enumerate(pairs)}
    _, ab = Bleu(2).compute_score(ref, hyp, verbose=0)
    _, ba = Bleu(2).compute_score(hyp, ref, verbose=0)
    ab, ba = np.asarray(ab[1]), np.asarray(ba[1])
    ok = np.flatnonzero((ab > bleu_threshold) & (ba > bleu_threshold))
    out = pd.DataFrame({"a": [pairs[k][0] for k in ok], "b": [pairs[k][1] for k in ok],
                        "bleu_ab": ab[ok], "bleu_ba": ba[ok]})
    t1 = time.perf_counter()
    if len(out):
        meteor = Meteor()
        keys = range(len(out))
        _, m_ab = meteor.compute_score({k: [norm[out.b[k]]] for k in keys}, {k: [norm[out.a[k]]] for k in keys})
        _, m_ba = meteor.compute_score({k: [norm[out.a[k]]] for k in keys}, {k: [norm[out.b[k]]] for k in keys})
        del meteor
        out["meteor_ab"], out["meteor_ba"] = m_ab, m_ba
    else:
        out["meteor_ab"], out["meteor_ba"] = [], []
    out["kept"] = (out.meteor_ab > meteor_threshold) & (out.meteor_ba > meteor_threshold)
    if timings is not None:
        timings.update({"pairs": len(pairs), "bleu_seconds": t1 - t0,
                        "meteor_seconds": time.perf_counter() - t1, "meteor_pairs": 2 * len(out)})
    return out
