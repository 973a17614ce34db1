import numpy as np
import pytest

from refexp.metrics.bootstrap import paired_difference, paired_ratio_difference


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


def test_ratio_of_sums_hand_computed_and_resampled_by_image():
    # Overall IoU: intersections over unions summed over the queries.
    # a: (8 + 10 + 0) / (16 + 10 + 9) = 18/35; b: (4 + 10 + 9) / (16 + 20 + 9) = 23/45.
    a_num, a_den = np.array([8, 10, 0]), np.array([16, 10, 9])
    b_num, b_den = np.array([4, 10, 9]), np.array([16, 20, 9])
    d = paired_ratio_difference(a_num, a_den, b_num, b_den)
    assert d.difference == pytest.approx(18 / 35 - 23 / 45)
    assert d.low <= d.difference <= d.high and d.n_clusters == 3
    # Every resample of the images recomputes both ratios over what it drew: check one by hand.
    groups = np.array(["x", "x", "y"])
    by_image = paired_ratio_difference(a_num, a_den, b_num, b_den, groups, n_resamples=500, seed=1)
    assert by_image.n_clusters == 2
    # The only possible resamples: {x, x}, {y, y}, {x, y}; the interval lies within their gaps.
    gaps = [18 / 26 - 14 / 36, 0 / 9 - 9 / 9, 18 / 35 - 23 / 45]
    assert min(gaps) - 1e-12 <= by_image.low <= by_image.high <= max(gaps) + 1e-12


def test_ratio_gap_matches_a_plain_resampling_loop():
    rng = np.random.default_rng(4)
    images = np.repeat(np.arange(30), 5)
    union = rng.integers(50, 400, size=150)
    a_num = (union * rng.uniform(0.3, 0.9, size=150)).astype(int)
    b_num = (union * rng.uniform(0.2, 0.8, size=150)).astype(int)
    d = paired_ratio_difference(a_num, union, b_num, union, images, n_resamples=3000, seed=5)
    # An independent loop: draw images with replacement, pool their queries, take the ratio gap.
    loop_rng, gaps = np.random.default_rng(11), []
    for _ in range(3000):
        drawn = np.concatenate([np.flatnonzero(images == i) for i in loop_rng.integers(0, 30, size=30)])
        gaps.append(a_num[drawn].sum() / union[drawn].sum() - b_num[drawn].sum() / union[drawn].sum())
    assert d.difference == pytest.approx(a_num.sum() / union.sum() - b_num.sum() / union.sum())
    assert d.low == pytest.approx(np.percentile(gaps, 2.5), abs=0.006)
    assert d.high == pytest.approx(np.percentile(gaps, 97.5), abs=0.006)


def test_equal_ratios_everywhere_have_no_spread_and_bad_denominators_are_refused():
    same = paired_ratio_difference(np.array([1, 2, 3]), np.array([2, 4, 6]), np.array([1, 1, 1]), np.array([4, 4, 4]))
    assert (same.difference, same.low, same.high) == (0.25, 0.25, 0.25) and same.verdict == "a > b"
    with pytest.raises(ValueError, match="positive"):
        paired_ratio_difference(np.ones(3), np.array([1, 0, 1]), np.ones(3), np.ones(3))
