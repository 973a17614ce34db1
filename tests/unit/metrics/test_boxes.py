"""Box metrics against hand-computed cases (inclusive pixel convention)."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from refexp.metrics import boxes as bm


def test_inclusive_area_and_iou_by_hand():
    # [0,0,9,9] covers 10x10 = 100 pixels; [5,5,14,14] also 100; overlap 5..9 = 5x5 = 25.
    a, b = [[0, 0, 9, 9]], [[5, 5, 14, 14]]
    assert bm.box_area(a).tolist() == [100.0]
    assert bm.box_iou(a, b).item() == pytest.approx(25 / 175)
    # A single-pixel box has area 1 and IoU 1 with itself (exclusive convention would give 0).
    assert bm.box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]]).item() == 1.0
    # Boxes touching edge to edge: [0..4] and [5..9] share no pixel.
    assert bm.box_iou([[0, 0, 4, 4]], [[5, 0, 9, 4]]).item() == 0.0
    # One pixel column of overlap: [0..4] and [4..8], 5 rows: inter 5, union 25 + 25 - 5.
    assert bm.box_iou([[0, 0, 4, 4]], [[4, 0, 8, 4]]).item() == pytest.approx(5 / 45)


def test_half_overlap_is_correct_at_threshold():
    # [0..9]x[0..9] vs [0..9]x[0..4]: inter 50, union 100 -> exactly 0.5, counted correct.
    assert bm.accuracy([[0, 0, 9, 4]], [[0, 0, 9, 9]]) == 1.0
    assert bm.accuracy([[0, 0, 9, 3]], [[0, 0, 9, 9]]) == 0.0  # 40/100


def test_paired_iou_equals_library_diagonal():
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 50, (500, 2), generator=g).double()
    wh = torch.randint(0, 40, (500, 2), generator=g).double()
    a = torch.cat([xy, xy + wh], 1)
    xy2 = torch.randint(0, 50, (500, 2), generator=g).double()
    b = torch.cat([xy2, xy2 + torch.randint(0, 40, (500, 2), generator=g).double()], 1)
    expected = torch.diagonal(tv_box_iou(bm.to_exclusive(a), bm.to_exclusive(b)))
    torch.testing.assert_close(bm.paired_iou(a, b), expected)
    torch.testing.assert_close(torch.diagonal(bm.box_iou(a, b)), expected)
    # The numpy matrix used by the ranking metrics equals torchvision's on every pair.
    np.testing.assert_allclose(bm.box_iou_np(a.numpy(), b.numpy()),
                               tv_box_iou(bm.to_exclusive(a), bm.to_exclusive(b)).numpy(), rtol=1e-12, atol=1e-12)


def test_p_at_1_recall_and_oracle_by_hand():
    gt = [[0, 0, 9, 9], [20, 20, 29, 29]]
    cands = [
        np.array([[0, 0, 9, 9], [50, 50, 60, 60], [1, 1, 9, 9]]),  # right box and a near-duplicate
        np.array([[0, 0, 5, 5], [40, 40, 45, 45], [20, 20, 29, 29]]),  # right box ranked last
    ]
    scores = [np.array([0.1, 0.9, 0.5]), np.array([3.0, 2.0, 1.0])]
    # Query 0: top-1 is the wrong box -> miss; top-2 includes [1,1,9,9] (IoU 81/100) -> hit.
    # Query 1: the right box is third.
    assert bm.p_at_1(scores, cands, gt).value == 0.0
    r2 = bm.recall_at_k(scores, cands, gt, 2)
    assert r2.hits.tolist() == [True, False]
    assert r2.value == 0.5
    assert bm.recall_at_k(scores, cands, gt, 3).value == 1.0
    assert bm.oracle_recall(cands, gt).value == 1.0
    # Chance: query 0 has 2 of 3 correct candidates, query 1 has 1 of 3 -> (2/3 + 1/3) / 2.
    assert bm.chance_at_1(cands, gt) == pytest.approx(0.5)


def test_ties_break_by_candidate_order_and_empty_sets_count():
    gt = [[0, 0, 9, 9], [0, 0, 9, 9]]
    cands = [np.array([[0, 0, 9, 9], [30, 30, 39, 39]]), np.zeros((0, 4))]
    scores = [np.array([1.0, 1.0]), np.zeros(0)]
    res = bm.p_at_1(scores, cands, gt)
    assert res.hits.tolist() == [True, False]
    assert res.n_no_candidates == 1
    assert bm.chance_at_1(cands, gt) == pytest.approx(0.25)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="shape"):
        bm.box_iou([[1, 2, 3]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="query 0: 1 scores for 2 candidates"):
        bm.p_at_1([np.array([1.0])], [np.array([[0, 0, 1, 1], [2, 2, 3, 3]])], [[0, 0, 1, 1]])
