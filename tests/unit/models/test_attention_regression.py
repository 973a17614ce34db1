"""Attention box regression (paper 003): shapes, every variant's forward/backward, the loss terms by
hand, and learning on a tiny synthetic set (loss falls, accuracy beats chance)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from refexp.config import AttentionRegressionConfig, AttentionRegressionModelConfig
from refexp.models.attention_regression import (AttentionRegression, RegressionOutput, regression_loss,
                                                xywh_iou)

VARIANTS = {
    "attention_full": {},
    "no_text_attention": {"text_attention": False},
    "no_attention": {"image_attention": False, "text_attention": False},
    "no_penalty": {"lambda_penalty": 0.0},
    "text_only": {"use_image": False, "image_attention": False, "text_attention": False},
}
SMALL = dict(embedding_dim=8, lstm_hidden=16, feature_grid=4, image_attention_hidden=12, image_attention_layers=2,
             text_attention_hidden=10, region_hidden=14, region_layers=2, dropout=0.0)


def small_backbone(channels: int = 6) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())


def build(variant: str, vocab_size: int = 9, image_size: int = 16, init_box=None) -> AttentionRegression:
    cfg = AttentionRegressionConfig(model=AttentionRegressionModelConfig(**SMALL), variants=VARIANTS)
    mcfg = cfg.variant_model(variant)
    backbone = small_backbone() if mcfg.use_image else None
    return AttentionRegression(mcfg, vocab_size, image_size=image_size, backbone=backbone,
                               feature_channels=6 if mcfg.use_image else 0, init_box=init_box)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_backward_every_variant(variant):
    torch.manual_seed(0)
    model = build(variant)
    tokens = torch.tensor([[4, 5, 6, 0], [7, 0, 0, 0], [8, 3, 0, 0]])
    lengths = torch.tensor([3, 1, 2])
    images = torch.rand(3, 3, 16, 16)
    out = model(images if model.cfg.use_image else None, tokens, lengths)
    assert out.box.shape == (3, 4) and (out.box >= 0).all()
    has_ia = variant in ("attention_full", "no_text_attention", "no_penalty")
    assert (out.image_attention is not None) == has_ia
    if has_ia:
        assert out.image_attention.shape == (3, 16) and (out.image_attention >= 0).all()
    if variant in ("attention_full", "no_penalty"):
        ta = out.text_attention
        assert ta.shape == (3, 4)
        assert torch.allclose(ta.sum(1), torch.ones(3))
        assert (ta[0, 3] == 0) and (ta[1, 1:] == 0).all()  # padding gets no attention
    else:
        assert out.text_attention is None
    target = torch.tensor([[1.0, 2.0, 8.0, 6.0], [0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 2.0, 2.0]])
    loss, extras = regression_loss(out, target, torch.tensor([3.0, 16.0, 0.25]), 1e-4, 1e-5)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert set(extras) == {"loss/iou", "loss/squared_error", "loss/attention_area"} | (
        {"attention/alive_cells"} if has_ia else set())


def test_coord_channels_and_attention_geometry():
    """Our two additions: (x, y) cell coordinates appended to each cell's features, and the box centre
    read from the attention centroid (with zero offsets and zero size the box sits on the centroid)."""
    torch.manual_seed(0)
    mcfg = AttentionRegressionModelConfig(**SMALL, coord_channels=True, attention_geometry=True)
    model = AttentionRegression(mcfg, 9, image_size=16, backbone=small_backbone(), feature_channels=6)
    assert model.img_att_region.in_features == 6 + 2
    coords = model.cell_coords[0]  # (16, 2) x, y in [-1, 1], row-major over the 4 x 4 grid
    assert coords[0].tolist() == [-1.0, -1.0] and coords[3].tolist() == [1.0, -1.0] and coords[15].tolist() == [1.0, 1.0]
    with torch.no_grad():
        model.reg_out.weight.zero_()
        model.reg_out.bias.zero_()
    tokens, lengths = torch.tensor([[4, 5], [6, 0]]), torch.tensor([2, 1])
    out = model(torch.rand(2, 3, 16, 16), tokens, lengths)
    att = out.image_attention.view(2, 4, 4)
    centre_x = (att.sum(1) * (torch.arange(4) + 0.5) / 4).sum(1) / att.sum((1, 2))
    centre_y = (att.sum(2) * (torch.arange(4) + 0.5) / 4).sum(1) / att.sum((1, 2))
    assert torch.allclose(out.box[:, 0], 16 * centre_x, atol=1e-4)
    assert torch.allclose(out.box[:, 1], 16 * centre_y, atol=1e-4)
    assert (out.box[:, 2:] == 0).all()
    # Gradients reach the attention MLP through the centroid alone.
    out.box[:, :2].sum().backward()
    assert model.img_att_out.weight.grad.abs().sum() > 0


def test_text_attention_needs_image_attention():
    with pytest.raises(ValueError, match="needs image_attention"):
        AttentionRegressionModelConfig(image_attention=False, text_attention=True)
    with pytest.raises(Exception, match="no_such_key"):
        AttentionRegressionConfig(variants={"bad": {"no_such_key": 1}})


def test_xywh_iou_hand_computed():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    # overlap 1x1 = 1, union 4 + 4 - 1 = 7; identical; disjoint
    assert torch.allclose(xywh_iou(pred, target), torch.tensor([1 / 7, 1.0, 0.0]), atol=1e-5)


def test_loss_terms_hand_computed():
    box = torch.tensor([[0.0, 0.0, 4.0, 2.0]], requires_grad=True)
    attention = torch.tensor([[0.5, 0.5, 1.0, 0.0]])  # S_att = 2
    out = RegressionOutput(box, attention, None)
    target = torch.tensor([[2.0, 0.0, 4.0, 2.0]])  # overlap 2x2 = 4, union 8 + 8 - 4 = 12
    loss, extras = regression_loss(out, target, torch.tensor([5.0]), lambda_squared_error=0.1, lambda_penalty=0.01)
    iou_loss = 1 - 4 / 12
    squared_error = 0.5 * (2.0 ** 2)  # only x differs, by 2
    penalty = 0.5 * (5.0 - 2.0) ** 2
    assert extras["loss/iou"] == pytest.approx(iou_loss, abs=1e-6)
    assert extras["loss/squared_error"] == pytest.approx(squared_error)
    assert extras["loss/attention_area"] == pytest.approx(penalty)
    assert extras["attention/alive_cells"] == pytest.approx(3 / 4)  # one of four cells is at 0
    assert float(loss.detach()) == pytest.approx(iou_loss + 0.1 * squared_error + 0.01 * penalty, abs=1e-6)
    # Without image attention (the -IA ablation) the penalty term is absent.
    loss_no_ia, _ = regression_loss(RegressionOutput(box, None, None), target, torch.tensor([5.0]), 0.1, 0.01)
    assert float(loss_no_ia.detach()) == pytest.approx(iou_loss + 0.1 * squared_error, abs=1e-6)


def _two_squares(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, ...]:
    """Images with a red and a green 6x6 square in different quadrants; the expression names one."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, size, size)
    tokens = torch.zeros(n, 2, dtype=torch.long)
    boxes = torch.zeros(n, 4)
    others = torch.zeros(n, 4)
    corners = [(1, 1), (9, 1), (1, 9), (9, 9)]
    for i in range(n):
        a, b = torch.randperm(4, generator=g)[:2].tolist()
        which = int(torch.randint(2, (1,), generator=g))
        for channel, (x, y) in ((0, corners[a]), (1, corners[b])):
            images[i, channel, y:y + 6, x:x + 6] = 1.0
        (tx, ty), (ox, oy) = (corners[a], corners[b]) if which == 0 else (corners[b], corners[a])
        tokens[i] = torch.tensor([4 + which, 6])  # "red thing" / "green thing"
        boxes[i] = torch.tensor([tx, ty, 6.0, 6.0])
        others[i] = torch.tensor([ox, oy, 6.0, 6.0])
    return images, tokens, boxes, others


def test_learns_tiny_synthetic_set_beats_chance():
    torch.manual_seed(0)
    images, tokens, boxes, _ = _two_squares(256, seed=1)
    test_images, test_tokens, test_boxes, _ = _two_squares(128, seed=2)
    lengths = torch.full((len(tokens),), 2)
    model = build("attention_full", vocab_size=8, init_box=(0.3, 0.3, 0.4, 0.4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cells = torch.full((len(tokens),), 36 / 256 * 16)  # box area in 4x4 cells

    def eval_accuracy() -> float:
        model.eval()
        with torch.no_grad():
            out = model(test_images, test_tokens, torch.full((len(test_tokens),), 2))
        model.train()
        return float((xywh_iou(out.box, test_boxes) >= 0.5).float().mean())

    losses = []
    for epoch in range(25):
        perm = torch.randperm(len(tokens))
        for start in range(0, len(tokens), 32):
            idx = perm[start:start + 32]
            out = model(images[idx], tokens[idx], lengths[idx])
            # lambda1 is large here because a 16 px image makes squared errors small, and the squared
            # error is the only gradient while predicted and true boxes are disjoint.
            loss, _ = regression_loss(out, boxes[idx], cells[idx], 0.02, 1e-3)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.6 * first
    # Chance: a uniform pick between the two annotated squares is right half of the time.
    assert eval_accuracy() > 0.8
    assert not math.isnan(last)
