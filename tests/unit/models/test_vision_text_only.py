"""The vision-only/text-only paper's parts: Eq. 1 on hand-computed probabilities, Eq. 2's alpha in (0, 1)
and learned end to end with the category branch fixed, the probability loss against its closed form, and
that the category FCN and the expression classifier learn on tiny problems."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from refexp.models.text_objseg import SmallFcnMap, TextObjSeg, weighted_logistic_loss
from refexp.models.vision_text_only import (
    CategoryFcn,
    ExpressionClassifier,
    FusedSegmentation,
    category_foreground,
    weighted_probability_loss,
)


def test_category_foreground_is_the_dot_product_over_classes_without_background():
    # 2 classes + background at 1 x 2 pixels: pixel 0 is class 1 surely, pixel 1 is half background.
    p_image = torch.tensor([[[[0.0, 0.5]], [[1.0, 0.25]], [[0.0, 0.25]]]])  # (1, 3, 1, 2)
    p_text = torch.tensor([[0.8, 0.2]])  # (1, 2)
    got = category_foreground(p_image, p_text)
    assert got.shape == (1, 1, 2)
    assert got[0, 0, 0].item() == pytest.approx(0.8)  # 1.0 * 0.8 + 0.0 * 0.2
    assert got[0, 0, 1].item() == pytest.approx(0.25 * 0.8 + 0.25 * 0.2)  # background takes no part


def test_probability_loss_equals_the_logistic_loss_of_the_same_scores():
    torch.manual_seed(0)
    scores = torch.randn(2, 5, 5)
    labels = (torch.rand(2, 5, 5) > 0.5).to(torch.uint8)
    got = weighted_probability_loss(torch.sigmoid(scores), labels, 1.0, 1 / 3)
    assert got.item() == pytest.approx(weighted_logistic_loss(scores, labels, 1.0, 1 / 3).item(), rel=1e-4)


def _tiny_parts(n_classes=3, vocab=12):
    torch.manual_seed(0)
    seg = TextObjSeg(SmallFcnMap("tiny", False, 8), vocab, 6, 8, 8, upsample=True, freeze_conv=True)
    category = CategoryFcn(SmallFcnMap("tiny", False, 8), n_classes, 8)
    classifier = ExpressionClassifier(vocab, 6, 8, 8, n_classes)
    return seg, category, classifier


def test_fused_model_mixes_the_branches_by_alpha_and_learns_alpha_with_the_category_branch_fixed():
    seg, category, classifier = _tiny_parts()
    model = FusedSegmentation(seg, category, classifier)
    images = torch.rand(2, 3, 32, 32)
    tokens, lengths = torch.tensor([[4, 5, 0], [6, 0, 0]]), torch.tensor([2, 1])
    p = model(images, tokens, lengths)
    assert p.shape == (2, 32, 32) and ((p >= 0) & (p <= 1)).all()
    assert 0 < model.alpha.item() < 1 and model.alpha.item() == pytest.approx(0.5)
    p1, p2 = model.branches(images, tokens, lengths)
    assert torch.allclose(p, 0.5 * p1 + 0.5 * p2, atol=1e-6)
    weighted_probability_loss(p, torch.ones(2, 32, 32), 1.0, 1.0).backward()
    assert model.alpha_logit.grad is not None and model.alpha_logit.grad.abs().item() > 0
    assert all(q.grad is None for q in (*category.parameters(), *classifier.parameters()))
    assert any(q.grad is not None for q in seg.classifier.parameters())
    # A large logit keeps alpha strictly inside (0, 1).
    with torch.no_grad():
        model.alpha_logit.fill_(30.0)
    assert model.alpha.item() <= 1.0 and model(images, tokens, lengths).max() <= 1.0


def test_fused_model_needs_the_high_resolution_lstm_cnn():
    seg, category, classifier = _tiny_parts()
    low = TextObjSeg(SmallFcnMap("tiny", False, 8), 12, 6, 8, 8, upsample=False)
    with pytest.raises(ValueError, match="high-resolution"):
        FusedSegmentation(low, category, classifier)


def test_category_fcn_learns_to_label_pixels_by_colour():
    # Left half red = class 1, right half blue = class 2, with a random split point per image.
    torch.manual_seed(0)
    fcn = CategoryFcn(SmallFcnMap("tiny", False, 16), 2, 16)
    for p in fcn.image_net.backbone.parameters():  # an untrained body cannot be fixed and still see colour
        p.requires_grad_(True)
    opt = torch.optim.Adam([p for p in fcn.parameters() if p.requires_grad], lr=0.01)
    images, labels = torch.zeros(8, 3, 32, 32), torch.zeros(8, 32, 32, dtype=torch.long)
    for i in range(8):
        cut = 8 + 2 * i
        images[i, 0, :, :cut], images[i, 2, :, cut:] = 1.0, 1.0
        labels[i, :, :cut], labels[i, :, cut:] = 1, 2
    losses = []
    fcn.train()
    for _ in range(60):
        logits = F.interpolate(fcn(images), size=(32, 32), mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    probs = fcn.probabilities(images, (32, 32))
    assert probs.shape == (8, 3, 32, 32) and torch.allclose(probs.sum(1), torch.ones(8, 32, 32), atol=1e-5)
    accuracy = (probs.argmax(1) == labels).float().mean().item()
    assert losses[-1] < 0.5 * losses[0] and accuracy > 0.9  # chance is 1/3 (3 labels)


def test_expression_classifier_learns_the_class_word_behind_other_words():
    torch.manual_seed(0)
    model = ExpressionClassifier(10, 8, 16, 16, 3)
    # word 4 + c is class c, after one or two filler words (7, 8, 9).
    seqs, labels, lengths = [], [], []
    for c in range(3):
        for filler in ([7], [8, 9], [9]):
            seqs.append(filler + [4 + c])
            labels.append(c)
            lengths.append(len(filler) + 1)
    tokens = torch.zeros(len(seqs), 3, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
    labels, lengths = torch.tensor(labels), torch.tensor(lengths)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(100):
        loss = F.cross_entropy(model(tokens, lengths), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first and loss.item() < math.log(3)
    assert (model(tokens, lengths).argmax(1) == labels).all()


def test_glove_embeddings_are_copied_in_and_not_trainable():
    matrix = torch.randn(12, 6)
    classifier = ExpressionClassifier(12, 6, 8, 8, 3, embeddings=matrix, freeze_embeddings=True)
    assert torch.equal(classifier.text.embed.weight, matrix) and not classifier.text.embed.weight.requires_grad


def test_fused_expressions_sharing_an_image_get_the_probabilities_and_gradients_of_repeated_images():
    """image_of runs both image sides (the LSTM-CNN's and the category FCN's) once per image: the same
    p_fg and the same gradients as giving each expression its own copy of its image."""
    seg, category, classifier = _tiny_parts()
    model = FusedSegmentation(seg, category, classifier).train()  # the fixed parts in eval mode, as in training
    images = torch.rand(2, 3, 32, 32)
    tokens, lengths = torch.tensor([[4, 5, 0], [6, 0, 0], [7, 8, 9]]), torch.tensor([2, 1, 3])
    image_of = torch.tensor([1, 0, 1])
    shared, repeated = model(images, tokens, lengths, image_of=image_of), model(images[image_of], tokens, lengths)
    assert shared.shape == repeated.shape == (3, 32, 32)
    assert torch.allclose(shared, repeated, atol=1e-6)
    params = [p for p in model.parameters() if p.requires_grad]
    labels = torch.rand(3, 32, 32) > 0.5
    got = torch.autograd.grad(weighted_probability_loss(shared, labels, 1.0, 1 / 3), params)
    want = torch.autograd.grad(weighted_probability_loss(repeated, labels, 1.0, 1 / 3), params)
    assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))
