"""Retrieval metrics of the GRN paper (Sec. 4.2): R@K and the median rank (med r).

- `best_target_ranks(scores, is_target) -> (Q,) int64`: per query, the rank (from 1) of its best-ranked
  target. Ties are broken against the target (pessimistic): rank = 1 + the number of NON-target candidates
  whose score is >= the best target's score. A model that gives every candidate the same score therefore
  ranks each target last among them, never first.
- `recall_from_ranks(ranks, ks) -> dict`: `recall_at_{K}` (the fraction of queries with at least one target
  in the top K: rank <= K) for each K, and `median_rank` (np.median of the ranks: x.5 for an even number of
  queries whose two middle ranks differ). The report resamples queries by image for intervals; it calls
  this on each resample of the ranks.
- `retrieval_metrics(scores, is_target, ks=(1, 10, 50, 100)) -> dict`: the two above in one call, plus the
  per-query `ranks` (an int64 array; not JSON, pop it before writing metrics).

scores: float (queries x candidates); is_target: bool of the same shape. A candidate excluded for a query
(the query region itself, which would otherwise be its own best match) is passed as score -inf with
is_target False: it then never outranks a target with a finite score. A query row with no target, a NaN
score, or shapes that differ raise ValueError naming the row.

Definitions: with med r the median over queries of the best target's rank, med r <= K means at least half
the queries have a target in the top K, so R@K >= 50%. The paper's Table 2/3 rows (med r 10 with
R@10 = 4.66%) cannot hold under that reading; its med r must be another statistic (the median over all
targets' ranks, or over retrieved images, which the paper does not define). We use the best target's rank,
the common definition of med r in retrieval (tests show the implication on ours).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _matrix(name: str, values) -> np.ndarray:
    """A 2-D array, or a ValueError naming the first query row whose length differs from row 0's."""
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged rows: numpy refuses to make an array of them
        arr = None
    if arr is None or (arr.ndim == 1 and arr.dtype == object):
        widths = [len(row) for row in values]
        bad = next((i for i, w in enumerate(widths) if w != widths[0]), 0)
        raise ValueError(f"{name}: query row {bad} has {widths[bad]} candidates, row 0 has {widths[0]}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (queries x candidates), got shape {arr.shape}")
    return arr


def _checked(scores, is_target) -> tuple[np.ndarray, np.ndarray]:
    s, t = _matrix("scores", scores), _matrix("is_target", is_target)
    if s.dtype.kind not in "fiu":
        raise ValueError(f"scores must be numbers, got dtype {s.dtype}")
    if t.dtype != bool:
        raise ValueError(f"is_target must be boolean, got dtype {t.dtype}")
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"scores has {s.shape[0]} query rows and is_target {t.shape[0]}: query row "
                         f"{min(s.shape[0], t.shape[0])} is missing from one of them")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"query row 0 (and every other) has {s.shape[1]} scores but {t.shape[1]} is_target entries")
    if s.shape[0] == 0:
        raise ValueError("no query rows")
    nan_rows = np.flatnonzero(np.isnan(s).any(1)) if s.dtype.kind == "f" else []
    if len(nan_rows):
        raise ValueError(f"query row {nan_rows[0]} has NaN scores ({len(nan_rows)} rows have some)")
    empty = np.flatnonzero(~t.any(1))
    if len(empty):
        raise ValueError(f"query row {empty[0]} has no target ({len(empty)} rows have none)")
    return s, t


def best_target_ranks(scores, is_target) -> np.ndarray:
    """(Q, N) scores and targets -> (Q,) int64 rank of each query's best target, from 1, ties against it."""
    s, t = _checked(scores, is_target)
    best = np.where(t, s, -np.inf).max(1)  # (Q,) the best target's score
    beaten_or_tied = (s >= best[:, None]) & ~t  # (Q, N) non-targets at or above it
    return 1 + beaten_or_tied.sum(1, dtype=np.int64)


def recall_from_ranks(ranks, ks: Sequence[int] = (1, 10, 50, 100)) -> dict[str, float]:
    """(Q,) best-target ranks -> {recall_at_K for each K, median_rank}."""
    r = np.asarray(ranks)
    if r.ndim != 1 or len(r) == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    out = {f"recall_at_{int(k)}": float((r <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(r))
    return out


def retrieval_metrics(scores, is_target, ks: Sequence[int] = (1, 10, 50, 100)) -> dict:
    """recall_at_{K} for each K, median_rank, and the per-query `ranks` (int64 array)."""
    ranks = best_target_ranks(scores, is_target)
    return {**recall_from_ranks(ranks, ks), "ranks": ranks}
