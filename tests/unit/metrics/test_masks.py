import numpy as np
import pytest
from pycocotools import mask as mask_utils

from refexp.metrics.masks import pair_iou, per_query_counts, per_query_iou, segmentation_metrics


def _mask(h, w, box):
    m = np.zeros((h, w), bool)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = True
    return m


def test_hand_computed_case():
    # Pair 1: truth 4x4 = 16 px, prediction its left half (8 px): IoU 0.5.
    # Pair 2: truth 2x5 = 10 px, prediction exact: IoU 1.
    # Pair 3: empty prediction against a 3x3 truth: IoU 0.
    truths = [_mask(6, 6, (0, 0, 4, 4)), _mask(5, 8, (1, 1, 6, 3)), _mask(10, 10, (2, 2, 5, 5))]
    preds = [_mask(6, 6, (0, 0, 2, 4)), truths[1].copy(), np.zeros((10, 10), bool)]
    m = segmentation_metrics(preds, truths)
    assert m["prec_at_0.5"] == pytest.approx(2 / 3)
    for t in ("0.6", "0.7", "0.8", "0.9"):
        assert m[f"prec_at_{t}"] == pytest.approx(1 / 3)
    assert m["overall_iou"] == pytest.approx((8 + 10 + 0) / (16 + 10 + 9))
    assert m["mean_iou"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert list(m) == ["prec_at_0.5", "prec_at_0.6", "prec_at_0.7", "prec_at_0.8", "prec_at_0.9",
                       "overall_iou", "mean_iou"]
    # The per-query counts the tables keep: overall IoU is their ratio of sums.
    intersection, union = per_query_counts(preds, truths)
    assert intersection.tolist() == [8, 10, 0] and union.tolist() == [16, 10, 9]
    assert intersection.dtype == union.dtype == np.int64
    assert intersection.sum() / union.sum() == pytest.approx(m["overall_iou"])


def test_matches_pycocotools_and_an_independent_count_on_random_masks():
    rng = np.random.default_rng(0)
    preds, truths = [], []
    for _ in range(40):
        h, w = rng.integers(5, 40, size=2)
        truth = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        truth[rng.integers(h), rng.integers(w)] = True
        pred = rng.random((h, w)) < rng.uniform(0.0, 0.6)
        preds.append(pred)
        truths.append(truth)
        rle_p = mask_utils.encode(np.asfortranarray(pred.astype(np.uint8)))
        rle_t = mask_utils.encode(np.asfortranarray(truth.astype(np.uint8)))
        assert pair_iou(pred, truth) == pytest.approx(float(mask_utils.iou([rle_p], [rle_t], [0])[0, 0]))
    inter = sum(int((p & t).sum()) for p, t in zip(preds, truths))
    union = sum(int((p | t).sum()) for p, t in zip(preds, truths))
    ious = np.array([(p & t).sum() / (p | t).sum() for p, t in zip(preds, truths)])
    m = segmentation_metrics(preds, truths)
    assert m["overall_iou"] == pytest.approx(inter / union)
    assert m["mean_iou"] == pytest.approx(ious.mean())
    assert m["prec_at_0.7"] == pytest.approx(np.mean(ious >= 0.7))
    assert np.allclose(per_query_iou(preds, truths), ious)


@pytest.mark.parametrize("pred, truth, message", [
    (np.zeros((4, 4), bool), np.zeros((4, 5), bool), "same size"),
    (np.zeros((4, 4), bool), np.zeros((4, 4), bool), "empty"),
])
def test_bad_pairs_are_errors(pred, truth, message):
    with pytest.raises(ValueError, match=message):
        segmentation_metrics([pred], [truth])
