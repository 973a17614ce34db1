import numpy as np
import pytest

from refexp.metrics.seeds import seed_difference


def test_hand_computed_t_interval():
    # Differences 2, 3, 2: mean 7/3, sd sqrt(1/3), se 1/3; t(0.975, df 2) = 4.302653.
    d = seed_difference([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])
    half = 4.302653 / 3
    assert d.differences == (2.0, 3.0, 2.0)
    assert d.mean == pytest.approx(7 / 3)
    assert d.low == pytest.approx(7 / 3 - half, abs=1e-6) and d.high == pytest.approx(7 / 3 + half, abs=1e-6)
    assert (d.n_seeds, d.seeds_a_ahead, d.verdict) == (3, 3, "a > b")


def test_gaps_of_both_signs_are_not_resolved():
    d = seed_difference([0.33, 0.28, 0.32], [0.31, 0.31, 0.31])
    assert d.seeds_a_ahead == 2 and d.low < 0 < d.high and d.verdict == "not resolved"


def test_a_reliably_behind_is_reversed():
    d = seed_difference([0.50, 0.52, 0.49, 0.51], [0.60, 0.61, 0.60, 0.62])
    assert d.verdict == "a < b" and d.seeds_a_ahead == 0


def test_a_constant_gap_has_a_zero_width_interval():
    d = seed_difference([0.3, 0.4, 0.5], [0.1, 0.2, 0.3])
    assert d.low == d.high == pytest.approx(0.2) and d.verdict == "a > b"
    same = seed_difference(np.ones(3), np.ones(3))
    assert (same.mean, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "not resolved")


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_difference([0.1], [0.2])
    with pytest.raises(ValueError, match="one length"):
        seed_difference([0.1, 0.2], [0.2])
