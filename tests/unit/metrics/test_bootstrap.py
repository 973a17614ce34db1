import numpy as np
import pytest

from refexp.metrics.bootstrap import paired_difference


def test_identical_variants_have_a_zero_interval():
    a = np.array([1, 0, 1, 1, 0])
    d = paired_difference(a, a)
    assert (d.difference, d.low, d.high, d.verdict) == (0.0, 0.0, 0.0, "not resolved")


def test_a_constant_paired_gap_is_resolved_exactly():
    # a hits every query, b none: every paired resample differs by exactly 1.
    d = paired_difference(np.ones(50), np.zeros(50))
    assert d.difference == 1.0 and d.low == pytest.approx(1.0) and d.high == pytest.approx(1.0)
    assert d.verdict == "a > b" and paired_difference(np.zeros(50), np.ones(50)).verdict == "a < b"


def test_interval_matches_the_normal_approximation_of_the_paired_difference():
    rng = np.random.default_rng(1)
    a = (rng.random(4000) < 0.40).astype(float)
    b = np.where(rng.random(4000) < 0.8, a, 1 - a)  # 80% of queries agree
    d = paired_difference(a, b, n_resamples=4000, seed=3)
    per_query = a - b
    half_width = 1.96 * per_query.std(ddof=1) / np.sqrt(len(a))
    assert d.difference == pytest.approx(per_query.mean())
    assert d.low == pytest.approx(per_query.mean() - half_width, abs=0.004)
    assert d.high == pytest.approx(per_query.mean() + half_width, abs=0.004)
    # Seeded: the same call gives the same interval.
    assert paired_difference(a, b, n_resamples=4000, seed=3) == d


def test_a_small_gap_on_few_queries_is_not_resolved():
    a = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 1], dtype=float)
    b = np.array([1, 0, 0, 1, 0, 1, 0, 1, 1, 1], dtype=float)
    d = paired_difference(a, b)
    assert d.difference == pytest.approx(0.0) and d.low < 0 < d.high and d.verdict == "not resolved"


def test_misaligned_inputs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        paired_difference(np.ones(3), np.ones(4))
