"""The batched multi-JVM METEOR gives pycocoevalcap's scores and survives a JVM dying."""
from __future__ import annotations

import json
import os
import random
import signal

import numpy as np
import pytest
from pycocoevalcap.meteor.meteor import Meteor

import refexp.text.meteor as meteor_mod
from refexp.text.bleu import normalize
from refexp.text.meteor import MeteorPool, MeteorProcess
from tests.conftest import require_shared


def _pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    referit = json.loads(require_shared("referit", "annotations", "referit_query_all.json").read_text())
    phrases = sorted({normalize(p) for descs in referit.values() for p in descs} - {""})
    rng = random.Random(seed)
    hyps, refs = [], []
    for _ in range(n):
        h = rng.choice(phrases)
        words = h.split()
        # half unrelated, half a one-word edit (METEOR around the 0.6 threshold)
        r = rng.choice(phrases) if rng.random() < 0.5 else " ".join(words[:-1] + ["man"])
        hyps.append(h)
        refs.append(r)
    return hyps, refs


@pytest.mark.shared
@pytest.mark.slow
def test_pool_equals_pycocoevalcap_compute_score():
    hyps, refs = _pairs(400, seed=0)
    meteor = Meteor()
    _, expected = meteor.compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    del meteor
    with MeteorPool(n_jvms=2, batch_size=150) as pool:
        got = pool.score(hyps, refs)
    assert np.array_equal(got, np.asarray(expected))
    assert 0 < (got > 0.6).sum() < len(got)


class _DiesOnce(MeteorProcess):
    """A METEOR process killed (SIGKILL) right after its first chunk, once per test."""

    killed = 0

    def score_chunk(self, hyps, refs):
        scores = super().score_chunk(hyps, refs)
        if _DiesOnce.killed == 0:
            _DiesOnce.killed += 1
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        return scores


@pytest.mark.shared
@pytest.mark.slow
def test_jvm_killed_mid_batch_is_restarted_and_batch_retried(monkeypatch):
    monkeypatch.setattr(meteor_mod, "_CHUNK_BYTES", 300)  # several chunks per batch
    hyps, refs = _pairs(60, seed=1)
    with MeteorPool(n_jvms=1, batch_size=60, process_factory=_DiesOnce) as pool:
        got = pool.score(hyps, refs)  # the JVM is killed after its first chunk
        assert pool.stats["restarts"] == 1 and pool.stats["retried_batches"] == 1
        again = pool.score(hyps, refs)  # the restarted JVM, undisturbed
    assert _DiesOnce.killed == 1
    assert np.array_equal(got, again) and 0 < (got > 0.6).sum() < len(got)


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        MeteorPool(n_jvms=1).score(["a b"], [])
