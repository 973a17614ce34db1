"""Is a difference between two variants more than training-seed noise? A paired t interval over seeds.

`seed_difference(a, b) -> SeedDifference`: a and b hold one score per training seed for two variants,
seed i of both trained with the same seed (the same data order, subset draw and initial state where
the variants share parameters). The interval is scipy.stats.ttest_rel's for the mean of a - b: with
few seeds it is wide, which is the honest answer. It complements refexp.metrics.bootstrap, whose
interval covers test-set noise for one seed only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ttest_rel

from refexp.metrics.bootstrap import interval_verdict, paired_arrays


@dataclass(frozen=True)
class SeedDifference:
    differences: tuple[float, ...]  # a - b at each seed
    mean: float
    low: float
    high: float
    confidence: float

    @property
    def n_seeds(self) -> int:
        return len(self.differences)

    @property
    def seeds_a_ahead(self) -> int:
        return sum(d > 0 for d in self.differences)

    @property
    def verdict(self) -> str:
        return interval_verdict(self.low, self.high)


def seed_difference(a, b, *, confidence: float = 0.95) -> SeedDifference:
    a, b = paired_arrays(a, b, "seeds")
    diffs = a - b
    mean = float(diffs.mean())
    if np.allclose(diffs, diffs[0], rtol=0.0, atol=1e-12):
        # Every seed gives the same gap: no spread to estimate (scipy would warn and return nan).
        low = high = mean
    else:
        interval = ttest_rel(a, b).confidence_interval(confidence_level=confidence)
        low, high = float(interval.low), float(interval.high)
    return SeedDifference(tuple(float(d) for d in diffs), mean, low, high, confidence)
