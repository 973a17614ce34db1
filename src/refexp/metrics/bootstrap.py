"""Is a difference between two variants more than test-set noise? A paired bootstrap that resamples images.

`paired_difference(a, b, groups, ...) -> PairedDifference`: a and b are per-query scores of two variants on
the SAME test queries in the same order (1/0 hits for P@1 or accuracy); the difference is mean(a) - mean(b).
`paired_ratio_difference(a_num, a_den, b_num, b_den, groups, ...)`: the same for a ratio of sums over the
queries, sum(a_num) / sum(a_den) - sum(b_num) / sum(b_den) (overall IoU: intersections over unions).

Queries are not independent: each region has about 3 expressions and each image many regions, so a
model that fails on one image fails on several of its queries at once. With `groups` (each query's image
id) the bootstrap resamples images with replacement, each with all of its queries (a cluster bootstrap),
and each resample's difference is the pooled mean (or the ratio of the sums) over the queries it drew; without
`groups` every query is its own cluster. The percentile interval comes from scipy.stats.bootstrap run over the cluster
indices (the percentile method stays defined when every resample gives the same difference).
Training-seed noise is not covered: this interval only says how much the test sample alone could move it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap


def interval_verdict(low: float, high: float) -> str:
    """'a > b' / 'a < b' when the interval of a - b excludes 0, else 'not resolved'."""
    if low > 0:
        return "a > b"
    if high < 0:
        return "a < b"
    return "not resolved"


@dataclass(frozen=True)
class PairedDifference:
    difference: float  # mean(a) - mean(b)
    low: float
    high: float
    confidence: float
    n_queries: int
    n_clusters: int  # images resampled (= n_queries when queries are resampled one by one)

    @property
    def verdict(self) -> str:
        return interval_verdict(self.low, self.high)


def paired_arrays(a, b, units: str) -> tuple[np.ndarray, np.ndarray]:
    """a and b as float arrays of one length >= 2 (`units`: what one score is of, plural: "queries", "seeds")."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired interval needs at least 2 {units}")
    return a, b


def cluster_totals(columns: list[np.ndarray], groups) -> np.ndarray:
    """(len(columns) + 1, n_clusters): each column summed per cluster, then each cluster's number of queries
    (clusters in first-seen order)."""
    groups = np.asarray(groups)
    if groups.shape != columns[0].shape:
        raise ValueError(f"groups must give one cluster per query: {groups.shape} for {columns[0].shape} queries")
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)  # clusters in order of appearance, so the result does not depend on id sorting
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    cluster = rank[inverse.reshape(-1)]
    return np.stack([*(np.bincount(cluster, weights=c, minlength=len(order)) for c in columns),
                     np.bincount(cluster, minlength=len(order)).astype(np.float64)])


def cluster_sums(differences: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the sum of the query differences and the number of queries (clusters in first-seen order)."""
    sums, counts = cluster_totals([differences], groups)
    return sums, counts


def _cluster_bootstrap(statistic, n_clusters: int, confidence: float, n_resamples: int, seed: int
                       ) -> tuple[float, float]:
    """Percentile interval of statistic(cluster indices) over resamples of the clusters."""
    if n_clusters < 2:
        raise ValueError("a cluster bootstrap needs at least 2 images")
    result = bootstrap((np.arange(n_clusters),), statistic, vectorized=True, confidence_level=confidence,
                       n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_difference(a, b, groups=None, *, confidence: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> PairedDifference:
    a, b = paired_arrays(a, b, "queries")
    differences = a - b
    difference = float(differences.mean())
    sums, counts = cluster_sums(differences, groups if groups is not None else np.arange(len(a)))
    n_clusters = len(sums)
    if np.allclose(sums / counts, difference, rtol=0.0, atol=1e-12):
        # Every cluster has the same mean gap, so every resample does: no spread (scipy would warn).
        return PairedDifference(difference, difference, difference, confidence, len(a), n_clusters)

    def pooled_mean(index, axis=-1):
        index = np.asarray(index, dtype=np.int64)
        return sums[index].sum(axis=axis) / counts[index].sum(axis=axis)

    low, high = _cluster_bootstrap(pooled_mean, n_clusters, confidence, n_resamples, seed)
    return PairedDifference(difference, low, high, confidence, len(a), n_clusters)


def paired_ratio_difference(a_num, a_den, b_num, b_den, groups=None, *, confidence: float = 0.95,
                            n_resamples: int = 2000, seed: int = 0) -> PairedDifference:
    """sum(a_num) / sum(a_den) - sum(b_num) / sum(b_den) over the same queries, with the interval of
    paired_difference: clusters (images) resampled with all their queries, each resample's ratios pooled."""
    a_num, a_den = paired_arrays(a_num, a_den, "queries")
    b_num, b_den = paired_arrays(b_num, b_den, "queries")
    if a_num.shape != b_num.shape:
        raise ValueError(f"paired scores must cover the same queries, got {a_num.shape} and {b_num.shape}")
    if (a_den <= 0).any() or (b_den <= 0).any():
        raise ValueError("every denominator of a ratio of sums must be positive")
    totals = cluster_totals([a_num, a_den, b_num, b_den], groups if groups is not None else np.arange(len(a_num)))
    n_clusters = totals.shape[1]

    def ratio_gap(index, axis=-1):
        index = np.asarray(index, dtype=np.int64)
        an, ad, bn, bd = (totals[i][index].sum(axis=axis) for i in range(4))
        return an / ad - bn / bd

    difference = float(ratio_gap(np.arange(n_clusters)))
    a_ratio, b_ratio = totals[0].sum() / totals[1].sum(), totals[2].sum() / totals[3].sum()
    if np.allclose(totals[0] / totals[1], a_ratio, rtol=0.0, atol=1e-12) and \
            np.allclose(totals[2] / totals[3], b_ratio, rtol=0.0, atol=1e-12):
        # Every cluster has the same two ratios, so every resample does: no spread (scipy would warn).
        return PairedDifference(difference, difference, difference, confidence, len(a_num), n_clusters)
    low, high = _cluster_bootstrap(ratio_gap, n_clusters, confidence, n_resamples, seed)
    return PairedDifference(difference, low, high, confidence, len(a_num), n_clusters)
