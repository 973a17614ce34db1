"""Is a difference between two variants more than test-set noise? A paired bootstrap over queries.

`paired_difference(a, b, ...) -> PairedDifference`: a and b are per-query scores of two variants on the
SAME test queries in the same order (1/0 hits for P@1 or accuracy); the difference is mean(a) - mean(b)
and its confidence interval comes from scipy.stats.bootstrap with paired resampling (the percentile
method: it stays defined when every resample gives the same difference, e.g. identical variants).
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


def paired_difference(a, b, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> PairedDifference:
    a, b = paired_arrays(a, b, "queries")
    difference = float(a.mean() - b.mean())
    if np.array_equal(a, b):  # every resample gives 0; scipy would warn about a degenerate distribution
        return PairedDifference(difference, 0.0, 0.0, confidence, len(a))
    result = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis), paired=True,
                       vectorized=True, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                       rng=np.random.default_rng(seed))
    return PairedDifference(difference, float(result.confidence_interval.low),
                            float(result.confidence_interval.high), confidence, len(a))
