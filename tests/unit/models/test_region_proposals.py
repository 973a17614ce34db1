"""The GRN paper's RPN (refexp.models.region_proposals): shapes, losses, and that it learns to find boxes a
grid of its anchor shapes misses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refexp.models.region_proposals import RegionProposals
from refexp.training.region_proposals import grid_boxes, proposal_recall


def small_rpn(channels: int = 32, **kw) -> RegionProposals:
    args = dict(anchor_sizes=[16, 32], aspect_ratios=[0.5, 1.0, 2.0], pre_nms_top_n=200, post_nms_top_n=10,
                anchors_per_image=64)
    return RegionProposals(channels, 64, **{**args, **kw})


def test_shapes_scores_and_anchors():
    torch.manual_seed(0)
    rpn = small_rpn().eval()
    maps = torch.randn(3, 32, 8, 8)  # stride 8 on a 64 x 64 input
    assert rpn.anchors_per_location == 6 and rpn.anchor_shapes().shape == (6, 4)
    anchors = rpn.anchors(maps)
    assert len(anchors) == 3 and anchors[0].shape == (8 * 8 * 6, 4)
    centres = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2
    assert set(centres[:, 0].unique().tolist()) == {8.0 * j for j in range(8)}  # one centre per map column
    boxes, scores = rpn(maps)
    assert len(boxes) == len(scores) == 3
    for b, s in zip(boxes, scores):
        assert b.shape == (10, 4) and s.shape == (10,)
        assert (b >= 0).all() and (b <= 64).all() and (b[:, 2:] >= b[:, :2]).all()
        assert ((s >= 0) & (s <= 1)).all() and torch.equal(s, s.sort(descending=True).values)


def test_losses_are_finite_and_reach_the_head_with_or_without_boxes():
    torch.manual_seed(0)
    rpn = small_rpn().train()
    losses = rpn.loss(torch.randn(2, 32, 8, 8), [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.zeros(0, 4)])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_rpn_box_reg"] > 0
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rpn.parameters())


def synthetic_maps(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Maps of 64 x 64 inputs (8 x 8 cells) with 1-2 boxes each: at the cell nearest a box's centre, channel 0
    is 1 and channels 1-4 hold its width, height and centre offsets; the other channels are noise."""
    maps = rng.normal(0, 0.1, (n, 32, 8, 8)).astype(np.float32)
    boxes = []
    for i in range(n):
        found = []
        for _ in range(rng.integers(1, 3)):
            w, h = rng.uniform(12, 40, 2)
            cx, cy = rng.uniform(w / 2, 64 - w / 2), rng.uniform(h / 2, 64 - h / 2)
            j, k = min(7, int(round(cx / 8))), min(7, int(round(cy / 8)))
            maps[i, :5, k, j] = [1.0, w / 32, h / 32, cx / 8 - j, cy / 8 - k]
            found.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        boxes.append(torch.tensor(found, dtype=torch.float32))
    return torch.from_numpy(maps), boxes


def inclusive(b: torch.Tensor) -> np.ndarray:
    out = b.numpy().astype(np.float64).copy()
    out[:, 2:] -= 1
    return out


@pytest.fixture
def one_thread():
    """2 s on 1 thread; several times that on the shared 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_it_learns_to_beat_the_grid_of_its_anchor_shapes(one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train_maps, train_boxes = synthetic_maps(96, rng)
    test_maps, test_boxes = synthetic_maps(32, rng)
    rpn = small_rpn()
    opt = torch.optim.Adam(rpn.parameters(), lr=0.01)
    for step in range(150):
        idx = rng.choice(len(train_boxes), 16, replace=False)
        losses = rpn.loss(train_maps[idx], [train_boxes[i] for i in idx])
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    rpn.eval()
    proposals, _ = rpn(test_maps)
    grid = grid_boxes(rpn, 10)
    assert grid.shape == (10, 4)
    gt = [inclusive(b) for b in test_boxes]
    learned = proposal_recall([inclusive(p) for p in proposals], gt, 0.5)
    baseline = proposal_recall([inclusive(grid)] * len(gt), gt, 0.5)
    assert learned > 0.8 and learned > baseline + 0.3, (learned, baseline)
    assert proposal_recall([inclusive(p) for p in proposals], gt, 0.7) > proposal_recall([inclusive(grid)] * len(gt), gt, 0.7)


def test_proposal_recall_by_hand():
    gt = [np.array([[0, 0, 9, 9], [20, 20, 29, 29]], float), np.array([[0, 0, 4, 4]], float)]
    cand = [np.array([[0, 0, 9, 9], [20, 20, 24, 29]], float), np.zeros((0, 4))]  # IoU 1 and 0.5; none
    assert proposal_recall(cand, gt, 0.5) == 2 / 3
    assert proposal_recall(cand, gt, 0.7) == 1 / 3
