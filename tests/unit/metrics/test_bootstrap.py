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


def test_resampling_images_widens_the_interval_when_an_images_queries_move_together():
    # 10 images of 20 queries; on each image every query gains (+1) or loses (-1) together.
    image_gain = np.array([1, 1, 1, 1, 1, 1, -1, -1, -1, -1], dtype=float)
    groups = np.repeat([f"img{i}" for i in range(10)], 20)
    a = np.repeat((image_gain > 0).astype(float), 20)
    b = 1 - a
    by_query = paired_difference(a, b, seed=0)
    by_image = paired_difference(a, b, groups, seed=0)
    assert by_query.difference == by_image.difference == pytest.approx(0.2)
    assert (by_query.n_clusters, by_image.n_clusters) == (200, 10)
    # Queries one by one: 200 "independent" +-1 scores, so the gap looks resolved ...
    assert by_query.verdict == "a > b"
    # ... but there are only 10 independent images: se = sd(image gaps) / sqrt(10) = 0.98 / 3.16.
    assert by_image.verdict == "not resolved"
    assert by_image.low == pytest.approx(0.2 - 1.96 * image_gain.std() / np.sqrt(10), abs=0.12)
    assert by_image.high - by_image.low > 3 * (by_query.high - by_query.low)


def test_one_query_per_image_is_the_query_bootstrap():
    rng = np.random.default_rng(2)
    a, b = (rng.random(300) < 0.5).astype(float), (rng.random(300) < 0.4).astype(float)
    assert paired_difference(a, b, groups=np.arange(300), seed=5) == paired_difference(a, b, seed=5)


def test_unequal_images_pool_their_queries():
    # The difference is the pooled mean over queries, not the mean of per-image means.
    a = np.array([1, 1, 1, 1, 0, 0], dtype=float)
    b = np.zeros(6)
    d = paired_difference(a, b, groups=["x", "x", "x", "x", "y", "z"], seed=0)
    assert d.difference == pytest.approx(4 / 6) and d.n_clusters == 3
    with pytest.raises(ValueError, match="one cluster per query"):
        paired_difference(a, b, groups=["x", "y"])
