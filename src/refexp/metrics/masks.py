"""Mask metrics of the segmentation papers (Hu et al. 2016, Table 1; the vision-only/text-only paper):

- `prec_at_<t>`: share of queries whose predicted mask has IoU >= t with the ground truth;
- `overall_iou`: total intersection over total union, summed over all queries (int64 pixel counts),
  so large regions weigh more — the papers' "overall IoU";
- `mean_iou`: the mean of the per-query IoUs.

Each pair is compared at its own size (the prediction mapped back to the image's original size first);
sizes may differ between pairs. An empty prediction against a non-empty truth has IoU 0. An empty
ground truth has no IoU to speak of: the data layer skips empty masks, so one here is an error.
`pair_iou` equals pycocotools' `mask.iou` on the same masks (tested).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def intersection_union(prediction: np.ndarray, truth: np.ndarray, index: int = 0) -> tuple[int, int]:
    """Pixel counts (intersection, union) of two boolean H x W masks of the same size."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if prediction.shape != truth.shape or prediction.ndim != 2:
        raise ValueError(f"pair {index}: prediction {prediction.shape} and ground truth {truth.shape} "
                         "must be H x W masks of the same size (map the prediction back to the image first)")
    union = int(np.count_nonzero(prediction | truth))
    if not truth.any():
        raise ValueError(f"pair {index}: the ground-truth mask is empty")
    return int(np.count_nonzero(prediction & truth)), union


def pair_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    inter, union = intersection_union(prediction, truth)
    return inter / union


def segmentation_metrics(predictions: Sequence[np.ndarray], ground_truths: Sequence[np.ndarray],
                         thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """prec_at_<t> for each threshold, overall_iou and mean_iou over equal-length sequences of masks."""
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truths)} ground truths")
    if not len(predictions):
        raise ValueError("no masks to score")
    counts = np.array([intersection_union(p, t, i) for i, (p, t) in enumerate(zip(predictions, ground_truths))],
                      dtype=np.int64)
    ious = counts[:, 0] / counts[:, 1]
    metrics = {f"prec_at_{t:g}": float(np.mean(ious >= t)) for t in thresholds}
    metrics["overall_iou"] = float(counts[:, 0].sum() / counts[:, 1].sum())
    metrics["mean_iou"] = float(ious.mean())
    return metrics


def per_query_counts(predictions: Sequence[np.ndarray], ground_truths: Sequence[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's (intersection, union) pixel counts, int64: the per-query tables keep them so that a
    report can resample overall IoU (a ratio of sums) by image, not only the per-query IoU."""
    counts = np.array([intersection_union(p, t, k) for k, (p, t) in enumerate(zip(predictions, ground_truths))],
                      dtype=np.int64).reshape(-1, 2)
    return counts[:, 0], counts[:, 1]


def per_query_iou(predictions: Sequence[np.ndarray], ground_truths: Sequence[np.ndarray]) -> np.ndarray:
    """Each pair's IoU (for paired bootstrap intervals resampled by image)."""
    intersection, union = per_query_counts(predictions, ground_truths)
    return intersection / union
