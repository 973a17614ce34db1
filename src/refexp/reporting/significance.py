"""The reports' "is this gap more than test-set noise?" table, shared by every model's report.

Intervals resample test images with all their queries (refexp.metrics.bootstrap): an image's queries
share its pixels and often its target, so they are not independent draws."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from refexp.metrics.bootstrap import paired_difference, paired_ratio_difference

# Columns that identify a test query in every model's predictions table.
QUERY_KEYS = ["region_id", "expression"]
IMAGE_KEY = "image_id"


@dataclass(frozen=True)
class QueryScores:
    """Per-variant per-query scores over one shared list of test queries, and each query's image.
    With `denominators` a variant's statistic is the ratio of sums, sum(scores) / sum(denominators)
    (overall IoU: intersections over unions); without, the mean of its scores."""

    scores: dict[str, np.ndarray]
    images: np.ndarray | None
    denominators: dict[str, np.ndarray] | None = None

    def subset(self, mask: np.ndarray) -> "QueryScores":
        """The queries where mask is true."""
        return QueryScores({k: v[mask] for k, v in self.scores.items()},
                           None if self.images is None else self.images[mask],
                           None if self.denominators is None else {k: v[mask] for k, v in self.denominators.items()})

    def __contains__(self, variant: str) -> bool:
        return variant in self.scores

    def __getitem__(self, variant: str) -> np.ndarray:
        return self.scores[variant]


def per_query_scores(prediction_files: dict[str, Path], score: Callable[[pd.DataFrame], np.ndarray],
                     columns: list[str], denominator: Callable[[pd.DataFrame], np.ndarray] | None = None
                     ) -> QueryScores:
    """score(table) (and denominator(table), for a ratio of sums) per variant whose predictions file exists,
    after checking that every table lists the same test queries in the same order (a paired comparison
    needs it)."""
    out, reference, images, denominators = {}, None, None, {}
    for variant, path in prediction_files.items():
        if not path.exists():
            continue
        table = pd.read_parquet(path, columns=[*QUERY_KEYS, IMAGE_KEY, *columns])
        keys = table[QUERY_KEYS]
        if reference is None:
            reference, images = keys, table[IMAGE_KEY].astype(str).to_numpy()
        elif not keys.equals(reference):
            raise ValueError(f"{path}: its test queries are not in the order of the other variants' predictions")
        out[variant] = np.asarray(score(table), dtype=np.float64)
        if denominator is not None:
            denominators[variant] = np.asarray(denominator(table), dtype=np.float64)
    return QueryScores(out, images, denominators if denominator is not None else None)


# The mask metrics whose gaps get an interval: (key, label); overall IoU resamples the pixel counts.
MASK_METRICS = [("prec_at_0.5", "prec@0.5"), ("overall_iou", "overall IoU"), ("mean_iou", "mean IoU")]


def mask_scores(prediction_files: dict[str, Path]) -> dict[str, QueryScores]:
    """Per key of MASK_METRICS, from one read of each per-query table's `intersection` and `union` pixel
    counts: hits (IoU >= 0.5), overall IoU (a ratio of sums) and per-query IoU."""
    overall = per_query_scores(prediction_files, lambda t: t["intersection"].to_numpy(), ["intersection", "union"],
                               denominator=lambda t: t["union"].to_numpy())
    iou = {v: overall[v] / overall.denominators[v] for v in overall.scores}
    return {"prec_at_0.5": QueryScores({v: (x >= 0.5).astype(np.float64) for v, x in iou.items()}, overall.images),
            "overall_iou": overall, "mean_iou": QueryScores(iou, overall.images)}


VERDICT_TEXT = {"a > b": "holds", "a < b": "reversed", "not resolved": "not resolved (interval spans 0)"}


def claim_intervals(correct: QueryScores, pairs: list[tuple[str, str]], seed: int) -> dict[tuple[str, str], object]:
    """(a, b) -> PairedDifference (images resampled) for each claim with both variants present."""
    if correct.denominators is not None:
        den = correct.denominators
        return {(a, b): paired_ratio_difference(correct[a], den[a], correct[b], den[b], correct.images, seed=seed)
                for a, b in pairs if a in correct and b in correct}
    return {(a, b): paired_difference(correct[a], correct[b], correct.images, seed=seed)
            for a, b in pairs if a in correct and b in correct}


def significance_table(correct: QueryScores, pairs: list[tuple[str, str]], seed: int, metric: str,
                       in_seed_study: bool = True, seed_note: str | None = None) -> list[str]:
    """Markdown lines: for each claim `a` > `b` with both variants present, the difference of `metric`
    in points, its paired 95% interval (test images resampled with their queries), and the verdict.
    seed_note: what to say of training-seed noise instead of the in_seed_study sentence."""
    intervals = claim_intervals(correct, pairs, seed)
    if not intervals:
        return []
    n_images = next(iter(intervals.values())).n_clusters
    rows = [f"| `{a}` > `{b}` | {100 * d.difference:+.2f} | [{100 * d.low:+.2f}, {100 * d.high:+.2f}] | "
            f"{VERDICT_TEXT[d.verdict]} |" for (a, b), d in intervals.items()]
    return [f"Is each gap more than test-set noise? {metric}, paired bootstrap over the {n_images} test images, "
            "each resampled with all its queries (2,000 resamples, percentile 95% interval, seeded); "
            + (seed_note or ("training-seed noise comes on top (seed_study.md, from `make seed-study`, judges the "
                             "same claims over training seeds)." if in_seed_study else
                             "training-seed noise comes on top, and the seed study does not cover this model yet.")), "",
            "| claim | difference (points) | 95% interval | on our data |", "|---|---|---|---|", *rows, ""]
