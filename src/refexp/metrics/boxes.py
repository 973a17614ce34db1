"""Box metrics with the papers' inclusive pixel convention (a box [x1, y1, x2, y2] covers
pixels x1..x2, so its width is x2 - x1 + 1).

- `box_iou(a, b)`: N x M IoU matrix, torchvision.ops.box_iou on boxes shifted to exclusive ends;
  `box_iou_np` is the same in numpy for the per-query ranking loops (proven equal in tests).
- `paired_iou(a, b)`: IoU of row i of a with row i of b (equals the diagonal of box_iou; tested).
- `recall_at_k(scores, candidates, gt, k)`: share of queries with a candidate of IoU >= threshold
  with the ground truth among the k highest-scoring ones. P@1 over an image's annotated boxes is
  recall_at_k(..., k=1) with the annotated boxes as candidates; R@1/R@10 over proposals likewise.
- `oracle_recall(candidates, gt)`: share of queries with any correct candidate (R@100 over 100
  proposals), independent of the scores.
- `chance_at_1(candidates, gt)`: exact expected P@1 of a uniform pick among the candidates.
- `accuracy(pred, gt)`: regression accuracy, share of predicted boxes with IoU >= threshold.

Queries with no candidates count as misses and are reported in `RankingResult.n_no_candidates`.
Ties in scores are broken by candidate order (stable sort), so results are deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

IOU_THRESHOLD = 0.5

ArrayLike = np.ndarray | torch.Tensor | Sequence[Sequence[float]]


def _as_boxes(boxes: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(np.array(boxes, dtype=np.float64) if not isinstance(boxes, torch.Tensor) else boxes,
                        dtype=torch.float64)
    if t.dim() == 1:
        t = t.reshape(-1, 4) if t.numel() else t.reshape(0, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(t.shape)}")
    return t


def to_exclusive(boxes: ArrayLike) -> torch.Tensor:
    """Inclusive [x1, y1, x2, y2] -> torchvision's exclusive-end boxes (x2 + 1, y2 + 1)."""
    t = _as_boxes(boxes).clone()
    t[:, 2:] += 1
    return t


def box_area(boxes: ArrayLike) -> torch.Tensor:
    t = _as_boxes(boxes)
    return (t[:, 2] - t[:, 0] + 1).clamp(min=0) * (t[:, 3] - t[:, 1] + 1).clamp(min=0)


def box_iou(a: ArrayLike, b: ArrayLike) -> torch.Tensor:
    """N x M IoU of inclusive-end boxes (float64)."""
    # Imported here: torchvision.ops pulls in torch._dynamo (~1 s), which the stages that only import this
    # module (every segmentation stage, through training.attention_regression) never need.
    from torchvision.ops import box_iou as torchvision_box_iou

    return torchvision_box_iou(to_exclusive(a), to_exclusive(b))


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """N x M IoU of inclusive-end boxes in numpy: the per-query path of the ranking metrics,
    where torch's per-call overhead dominates. Proven equal to `box_iou` (torchvision) in tests."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0] + 1, 0, None) * np.clip(a[:, 3] - a[:, 1] + 1, 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0] + 1, 0, None) * np.clip(b[:, 3] - b[:, 1] + 1, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _np_boxes(boxes: ArrayLike) -> np.ndarray:
    arr = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes, dtype=np.float64)
    arr = arr.astype(np.float64, copy=False)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def paired_iou(a: ArrayLike, b: ArrayLike) -> torch.Tensor:
    """IoU of a[i] with b[i] (inclusive ends); O(N) instead of the N x N matrix."""
    ta, tb = _as_boxes(a), _as_boxes(b)
    if ta.shape != tb.shape:
        raise ValueError(f"paired_iou needs equal shapes, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    iw = (torch.minimum(ta[:, 2], tb[:, 2]) - torch.maximum(ta[:, 0], tb[:, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(ta[:, 3], tb[:, 3]) - torch.maximum(ta[:, 1], tb[:, 1]) + 1).clamp(min=0)
    inter = iw * ih
    union = box_area(ta) + box_area(tb) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def accuracy(pred: ArrayLike, gt: ArrayLike, threshold: float = IOU_THRESHOLD) -> float:
    """Regression accuracy: share of predictions with IoU >= threshold against their ground truth."""
    iou = paired_iou(pred, gt)
    return float((iou >= threshold).double().mean()) if len(iou) else float("nan")


@dataclass(frozen=True)
class RankingResult:
    value: float  # share of queries that hit
    hits: np.ndarray  # bool per query
    n_queries: int
    n_no_candidates: int


def _hits_at_k(scores: Sequence[ArrayLike], candidates: Sequence[ArrayLike], gt: ArrayLike,
               k: int | None, threshold: float) -> tuple[np.ndarray, int]:
    gt_t = _np_boxes(gt)
    if not (len(scores) == len(candidates) == len(gt_t)):
        raise ValueError(f"need one score vector and candidate set per query: "
                         f"{len(scores)} scores, {len(candidates)} candidate sets, {len(gt_t)} gt boxes")
    hits = np.zeros(len(gt_t), dtype=bool)
    empty = 0
    for i, (s, c) in enumerate(zip(scores, candidates)):
        cand = _np_boxes(c)
        if len(cand) == 0:
            empty += 1
            continue
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if len(s) != len(cand):
            raise ValueError(f"query {i}: {len(s)} scores for {len(cand)} candidates")
        order = np.argsort(-s, kind="stable")[: (k if k is not None else len(s))]
        iou = box_iou_np(cand[order], gt_t[i:i + 1])[:, 0]
        hits[i] = bool((iou >= threshold).any())
    return hits, empty


def recall_at_k(scores: Sequence[ArrayLike], candidates: Sequence[ArrayLike], gt: ArrayLike, k: int,
                threshold: float = IOU_THRESHOLD) -> RankingResult:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits, empty = _hits_at_k(scores, candidates, gt, k, threshold)
    return RankingResult(float(hits.mean()) if len(hits) else float("nan"), hits, len(hits), empty)


def p_at_1(scores: Sequence[ArrayLike], candidates: Sequence[ArrayLike], gt: ArrayLike,
           threshold: float = IOU_THRESHOLD) -> RankingResult:
    """Top-1 precision: the highest-scoring candidate overlaps the ground truth by IoU >= threshold."""
    return recall_at_k(scores, candidates, gt, 1, threshold)


def oracle_recall(candidates: Sequence[ArrayLike], gt: ArrayLike, threshold: float = IOU_THRESHOLD) -> RankingResult:
    """Upper bound of any ranking: some candidate is correct (R@100 over 100 proposals)."""
    zeros = [np.zeros(len(_np_boxes(c))) for c in candidates]
    hits, empty = _hits_at_k(zeros, candidates, gt, None, threshold)
    return RankingResult(float(hits.mean()) if len(hits) else float("nan"), hits, len(hits), empty)


def chance_at_1(candidates: Sequence[ArrayLike], gt: ArrayLike, threshold: float = IOU_THRESHOLD) -> float:
    """Exact expected top-1 precision of a uniform random pick (no sampling): the mean over
    queries of the share of candidates with IoU >= threshold; an empty set contributes 0."""
    gt_t = _np_boxes(gt)
    if len(candidates) != len(gt_t):
        raise ValueError(f"{len(candidates)} candidate sets for {len(gt_t)} gt boxes")
    shares = []
    for i, c in enumerate(candidates):
        cand = _np_boxes(c)
        shares.append(float((box_iou_np(cand, gt_t[i:i + 1])[:, 0] >= threshold).mean()) if len(cand) else 0.0)
    return float(np.mean(shares)) if shares else float("nan")
