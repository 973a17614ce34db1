"""Table 1's trained baselines (refexp.models.text_objseg): the per-word FCN, its labels and combinations,
GroundeR's spatial feature, the proposal scorer and the pooled proposal features."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from refexp.models.text_objseg import (
    PerWordFcn,
    ProposalScorer,
    box_spatial,
    combine_word_scores,
    per_word_labels,
    pooled_proposal_features,
)

# ---------------------------------------------------------------- per-word labels and combinations


def test_per_word_labels_copy_the_mask_to_the_expressions_words_only():
    masks = torch.tensor([[[1, 0], [0, 1]]])  # (1, 2, 2)
    words = torch.tensor([[1, 0, 1]])  # (1, 3)
    labels = per_word_labels(masks, words)
    assert labels.shape == (1, 3, 2, 2) and labels.dtype == torch.float32
    assert torch.equal(labels[0, 0], masks[0].float())
    assert torch.equal(labels[0, 2], masks[0].float())
    assert torch.equal(labels[0, 1], torch.zeros(2, 2))


def test_per_word_labels_per_row():
    masks = torch.tensor([[[1, 1]], [[0, 1]]], dtype=torch.bool)  # (2, 1, 2)
    words = torch.tensor([[0, 1], [1, 1]], dtype=torch.bool)
    labels = per_word_labels(masks, words)  # (2, 2, 1, 2)
    assert labels.tolist() == [[[[0, 0]], [[1, 1]]], [[[0, 1]], [[0, 1]]]]


# 3 words on a 2x2 map; word 2 is never listed but has huge logits of both signs.
_SCORES = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]],
                         [[-0.5, 0.5], [0.2, -2.0]],
                         [[100.0, -100.0], [100.0, -100.0]]]])  # (1, 3, 2, 2)


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_average_is_the_mean_probability_of_the_listed_words():
    present = torch.tensor([[True, True, False]])
    out = combine_word_scores(_SCORES, present, "average")
    assert out.shape == (1, 2, 2)
    expected = (_sigmoid(_SCORES[0, 0].numpy()) + _sigmoid(_SCORES[0, 1].numpy())) / 2 - 0.5
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)
    # foreground where the mean sigmoid > 0.5: (2, -.5) yes (.629), (-1, .5) no (.446), (.5, .2) yes, (-3, -2) no
    assert (out[0] > 0).tolist() == [[True, False], [True, False]]


def test_intersection_needs_every_listed_word_and_union_any():
    present = torch.tensor([[True, True, False]])
    inter = combine_word_scores(_SCORES, present, "intersection")[0]
    union = combine_word_scores(_SCORES, present, "union")[0]
    assert torch.equal(inter, torch.minimum(_SCORES[0, 0], _SCORES[0, 1]))
    assert torch.equal(union, torch.maximum(_SCORES[0, 0], _SCORES[0, 1]))
    assert (inter > 0).tolist() == [[False, False], [True, False]]
    assert (union > 0).tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize("how", ["average", "intersection", "union"])
def test_unlisted_words_are_ignored_even_with_huge_logits(how):
    present = torch.tensor([[True, False, False]])  # only word 0
    out = combine_word_scores(_SCORES, present, how)[0]
    assert ((out > 0) == (_SCORES[0, 0] > 0)).all()
    if how != "average":
        assert torch.equal(out, _SCORES[0, 0])
    # raising the unlisted words' logits changes nothing
    louder = _SCORES.clone()
    louder[:, 1:] = 1e6
    assert torch.equal(combine_word_scores(louder, present, how), combine_word_scores(_SCORES, present, how))


@pytest.mark.parametrize("how", ["average", "intersection", "union"])
def test_a_row_without_a_listed_word_is_all_background(how):
    scores = torch.cat([_SCORES, _SCORES])  # (2, 3, 2, 2)
    present = torch.tensor([[False, False, False], [True, True, True]])
    out = combine_word_scores(scores, present, how)
    assert torch.isfinite(out).all()
    assert (out[0] < 0).all()
    # the second row, with every word listed, is unaffected by the first
    assert torch.equal(out[1], combine_word_scores(_SCORES, present[1:], how)[0])


def test_rows_with_different_word_sets_on_a_1x2_map():
    scores = torch.tensor([[[[3.0, -3.0]], [[-1.0, 2.0]], [[0.5, 0.5]]]]).expand(2, -1, -1, -1)  # (2, 3, 1, 2)
    present = torch.tensor([[True, False, True], [False, True, True]])
    avg = combine_word_scores(scores, present, "average")
    expected = np.array([[(_sigmoid(3.0) + _sigmoid(0.5)) / 2, (_sigmoid(-3.0) + _sigmoid(0.5)) / 2],
                         [(_sigmoid(-1.0) + _sigmoid(0.5)) / 2, (_sigmoid(2.0) + _sigmoid(0.5)) / 2]]) - 0.5
    np.testing.assert_allclose(avg[:, 0].numpy(), expected, atol=1e-6)
    assert combine_word_scores(scores, present, "intersection")[:, 0].tolist() == [[0.5, -3.0], [-1.0, 0.5]]
    assert combine_word_scores(scores, present, "union")[:, 0].tolist() == [[3.0, 0.5], [0.5, 2.0]]


def test_an_unknown_combination_is_an_error():
    with pytest.raises(ValueError, match="average, intersection or union"):
        combine_word_scores(_SCORES, torch.tensor([[True, True, True]]), "mean")


# ---------------------------------------------------------------- GroundeR's spatial feature


def test_box_spatial_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 63.0, 31.0],  # the top-left 64 x 32 pixels of a 128 input
                          [0.0, 0.0, 127.0, 127.0],  # the whole input
                          [32.0, 64.0, 95.0, 127.0]])  # a 64 x 64 box in the lower middle
    out = box_spatial(boxes, 128)
    assert out.shape == (3, 5)
    expected = [[-1.0, -1.0, 0.0, -0.5, 64 * 32 / 128 ** 2],
                [-1.0, -1.0, 1.0, 1.0, 1.0],
                [-0.5, 0.0, 0.5, 1.0, 0.25]]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    # any leading shape
    assert box_spatial(boxes.view(1, 3, 4), 128).shape == (1, 3, 5)


def test_box_spatial_of_a_degenerate_box_has_zero_area():
    out = box_spatial(torch.tensor([[10.0, 10.0, 5.0, 20.0]]), 64)
    assert out[0, 4].item() == 0.0


# ---------------------------------------------------------------- pooled proposal features


def test_a_constant_map_pools_to_the_constant():
    body = torch.stack([torch.full((4, 4), 3.0), torch.full((4, 4), -2.0)])  # (C=2, 4, 4), stride 8: 32 x 32 input
    boxes = torch.tensor([[0, 0, 31, 31], [4, 8, 20, 13], [10, 10, 10, 10]], dtype=torch.float32)
    feats = pooled_proposal_features(body, boxes, stride=8, roi_size=1)
    assert feats.shape == (3, 2)
    np.testing.assert_allclose(feats.numpy(), [[3.0, -2.0]] * 3, atol=1e-5)
    feats2 = pooled_proposal_features(body, boxes, stride=8, roi_size=2)
    assert feats2.shape == (3, 2 * 4)  # (K, C * roi_size^2), channel-major
    np.testing.assert_allclose(feats2.view(3, 2, 4).numpy(), np.broadcast_to([[3.0], [-2.0]], (3, 2, 4)), atol=1e-5)


def _left_half_map() -> torch.Tensor:
    body = torch.zeros(1, 4, 4)  # (C, h, w), stride 8: a 32 x 32 input
    body[:, :, :2] = 1.0  # map columns 0-1 = input pixels 0-15
    return body


def test_left_and_right_halves_pool_to_one_and_zero():
    boxes = torch.tensor([[0, 0, 15, 31], [16, 0, 31, 31], [0, 0, 31, 31]], dtype=torch.float32)
    feats = pooled_proposal_features(_left_half_map(), boxes, stride=8, roi_size=1)[:, 0]
    assert feats[0].item() == pytest.approx(1.0, abs=1e-5)
    assert feats[1].item() == pytest.approx(0.0, abs=1e-5)
    assert feats[2].item() == pytest.approx(0.5, abs=1e-5)  # the whole image: half and half


def test_masks_multiply_the_map_before_pooling():
    body = torch.full((2, 4, 4), 2.0)
    boxes = torch.tensor([[0, 0, 31, 31], [0, 0, 15, 31], [0, 0, 31, 31]], dtype=torch.float32)
    masks = torch.stack([torch.zeros(4, 4), torch.ones(4, 4), _left_half_map()[0]])  # (K, h, w) coverage
    feats = pooled_proposal_features(body, boxes, stride=8, roi_size=1, masks=masks)
    assert feats.shape == (3, 2)
    np.testing.assert_allclose(feats[0].numpy(), [0.0, 0.0], atol=1e-6)  # an empty mask: zero features
    np.testing.assert_allclose(feats[1].numpy(), [2.0, 2.0], atol=1e-5)  # full coverage: the map itself
    np.testing.assert_allclose(feats[2].numpy(), [1.0, 1.0], atol=1e-5)  # half covered, whole box: half
    # full coverage equals no masks at all
    plain = pooled_proposal_features(body, boxes, stride=8, roi_size=2)
    full = pooled_proposal_features(body, boxes, stride=8, roi_size=2, masks=torch.ones(3, 4, 4))
    assert torch.allclose(plain, full, atol=1e-6)


def test_pooling_matches_roi_align_on_continuous_boxes():
    from torchvision.ops import roi_align

    torch.manual_seed(0)
    body = torch.randn(3, 5, 6)  # (C, h, w), stride 4: a 24 x 20 input
    boxes = torch.tensor([[0, 0, 23, 19], [2, 3, 9, 17], [11, 0, 12, 5]], dtype=torch.float32)
    feats = pooled_proposal_features(body, boxes, stride=4, roi_size=2)
    continuous = torch.cat([torch.zeros(3, 1), boxes[:, :2], boxes[:, 2:] + 1], 1)  # inclusive -> [x1, x2 + 1)
    reference = roi_align(body[None], continuous, 2, spatial_scale=0.25, aligned=True)  # (K, C, 2, 2)
    assert feats.shape == (3, 12)
    assert torch.allclose(feats, reference.flatten(1), atol=1e-6)
    # with masks: each proposal on its own masked copy of the map
    masks = torch.rand(3, 5, 6)
    feats = pooled_proposal_features(body, boxes, stride=4, roi_size=2, masks=masks)
    for k in range(3):
        one = roi_align((body * masks[k])[None], continuous[k:k + 1], 2, spatial_scale=0.25, aligned=True)
        assert torch.allclose(feats[k], one.flatten(), atol=1e-6)


# ---------------------------------------------------------------- the proposal scorer


def test_scorer_shape_and_padding_slots():
    torch.manual_seed(0)
    model = ProposalScorer(visual_dim=7, vocab_size=10, embed_dim=4, text_hidden=6, hidden=8).eval()
    proposals = torch.randn(2, 5, 7)
    valid = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    tokens, lengths = torch.tensor([[3, 4, 0], [5, 0, 0]]), torch.tensor([2, 1])
    proposals[0, 3:] = 1e4  # whatever sits in the padding
    logits = model(proposals, valid, tokens, lengths)
    assert logits.shape == (2, 5)
    assert torch.isneginf(logits[0, 3:]).all()
    assert torch.isfinite(logits[0, :3]).all() and torch.isfinite(logits[1]).all()
    # a proposal's score depends on itself and the phrase only: the valid slots score as without padding
    alone = model(proposals[:1, :3], valid[:1, :3], tokens[:1], lengths[:1])
    assert torch.allclose(logits[0, :3], alone[0], atol=1e-6)
    assert logits.softmax(1)[0, 3:].sum().item() == 0.0


@pytest.fixture
def one_thread():
    # a tiny model's many small steps: several threads only contend (30 s instead of 1 s on a busy 2-core box)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_scorer_learns_to_pick_the_proposal_matching_the_word(one_thread):
    torch.manual_seed(0)
    n_words, k, batch = 6, 4, 64

    def sample(n):
        # every query names one of n_words; its image has k proposals of distinct words, one of them the named
        words = torch.rand(n, n_words).argsort(1)[:, :k]  # (n, k) each proposal's word, distinct
        target = torch.randint(0, k, (n,))
        named = words[torch.arange(n), target]
        feats = F.one_hot(words, n_words).float() + 0.1 * torch.randn(n, k, n_words)  # (n, k, n_words)
        tokens = (named + 1)[:, None]  # (n, 1), 0 = pad
        return feats, tokens, torch.ones(n, dtype=torch.long), target

    model = ProposalScorer(visual_dim=n_words, vocab_size=n_words + 1, embed_dim=8, text_hidden=16, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    valid = torch.ones(batch, k, dtype=torch.bool)
    losses = []
    for _ in range(300):
        feats, tokens, lengths, target = sample(batch)
        loss = F.cross_entropy(model(feats, valid, tokens, lengths), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    model.eval()
    feats, tokens, lengths, target = sample(500)
    with torch.no_grad():
        accuracy = (model(feats, torch.ones(500, k, dtype=torch.bool), tokens, lengths).argmax(1) == target)
    assert accuracy.float().mean().item() > 0.8  # chance is 1 / k = 0.25


# ---------------------------------------------------------------- the per-word FCN


class _StandInNet(nn.Module):
    """The image_net interface of SmallFcnMap: a stride-4 body with batch norm, a 1x1 head to dim."""

    stride, dim = 4, 6

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 5, 4, stride=4), nn.BatchNorm2d(5), nn.Dropout(0.5))
        self.fc = nn.Conv2d(5, self.dim, 1)

    def conv_body(self) -> nn.Module:
        return self.backbone

    def body(self, images):
        return self.backbone(images)

    def head(self, x):
        return self.fc(F.relu(x))

    def forward(self, images):
        return self.head(self.body(images))


def test_per_word_fcn_shape_and_the_relu_then_1x1_words():
    torch.manual_seed(0)
    model = PerWordFcn(_StandInNet(), n_words=3).eval()
    images = torch.rand(2, 3, 16, 24)
    out = model(images)
    assert out.shape == (2, 3, 4, 6)
    assert model.stride == 4
    with torch.no_grad():
        expected = model.words(F.relu(model.image_net(images)))
        body_maps = model.image_net.body(images)
    assert torch.allclose(out, expected)
    # the cached body maps give the same logits (the baseline's training path)
    assert torch.allclose(model(None, body_maps), out, atol=1e-6)


def test_freeze_conv_fixes_the_body_and_keeps_it_in_eval_mode():
    torch.manual_seed(0)
    model = PerWordFcn(_StandInNet(), n_words=3, freeze_conv=True)
    model.train()
    body = model.image_net.conv_body()
    assert not body.training and all(not m.training for m in body.modules())
    assert model.training and model.image_net.fc.training and model.words.training
    assert all(not p.requires_grad for p in body.parameters())
    running = body[1].running_mean.clone()
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is None for p in body.parameters())
    assert model.words.weight.grad is not None and model.image_net.fc.weight.grad is not None
    assert torch.equal(body[1].running_mean, running)  # batch-norm statistics untouched
    # deterministic in training mode: no dropout in the fixed body
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(model(x), model(x))


def test_without_freeze_conv_the_body_trains():
    torch.manual_seed(0)
    model = PerWordFcn(_StandInNet(), n_words=2, freeze_conv=False)
    model.train()
    assert model.image_net.conv_body().training
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.image_net.conv_body().parameters())
