import pytest
import torch
import torch.nn.functional as F

from refexp.models.text_objseg import (BilinearUpsample, SmallFcnMap, TextObjSeg, VggFc8Map, decay_groups,
                                       spatial_channels, weighted_logistic_loss)


def test_converted_fc8_map_equals_the_classifier_at_224():
    from torchvision.models import vgg16

    torch.manual_seed(0)
    fcn = VggFc8Map(pretrained=False).eval()
    reference = vgg16(weights=None).eval()
    reference.load_state_dict({**{f"features.{k}": v for k, v in fcn.features.state_dict().items()},
                               "classifier.0.weight": fcn.fc6.weight.flatten(1), "classifier.0.bias": fcn.fc6.bias,
                               "classifier.3.weight": fcn.fc7.weight.flatten(1), "classifier.3.bias": fcn.fc7.bias,
                               "classifier.6.weight": fcn.fc8.weight.flatten(1), "classifier.6.bias": fcn.fc8.bias})
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        fc8_map = fcn(images)  # (2, 1000, 7, 7)
        logits = reference((images - fcn.mean) / fcn.std)
    assert fc8_map.shape == (2, 1000, 7, 7)
    # The centre cell's 7x7 window covers the whole pool5 map: exactly the classifier's input.
    assert torch.allclose(fc8_map[:, :, 3, 3], logits, atol=1e-4, rtol=1e-4)


def test_the_bilinear_deconvolution_reproduces_bilinear_upsampling():
    up = BilinearUpsample(stride=8)
    coarse = torch.randn(3, 1, 6, 5)
    with torch.no_grad():
        out = up(coarse)
    reference = F.interpolate(coarse, scale_factor=8, mode="bilinear", align_corners=False)
    assert out.shape == reference.shape == (3, 1, 48, 40)
    # Equal wherever the kernel sees no zero padding (half a cell from the border).
    assert torch.allclose(out[..., 4:-4, 4:-4], reference[..., 4:-4, 4:-4], atol=1e-5)


@pytest.mark.parametrize("stride", [8, 16])
def test_the_upsampling_matmul_equals_the_transposed_convolution(stride):
    """BilinearUpsample computes its deconvolution as tiles; any (trained) kernel gives ConvTranspose2d's map
    and its gradients."""
    torch.manual_seed(0)
    up = BilinearUpsample(stride)
    with torch.no_grad():
        up.deconv.weight.add_(0.1 * torch.randn_like(up.deconv.weight))  # not only the bilinear kernel
    coarse = torch.randn(2, 1, 5, 7, requires_grad=True)
    out = up(coarse)
    reference = up.deconv(coarse)
    assert out.shape == reference.shape == (2, 1, 5 * stride, 7 * stride)
    assert torch.allclose(out, reference, atol=1e-5)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [coarse, up.deconv.weight], grad)
    want = torch.autograd.grad(reference, [coarse, up.deconv.weight], grad)
    assert all(torch.allclose(g, w, atol=1e-4) for g, w in zip(got, want))


def test_spatial_channels_are_the_codes():
    where = spatial_channels(2, 4, 8)
    assert where.shape == (8, 2, 4)
    # cell (row 1, column 2) of a 2 x 4 map
    xmin, ymin, xmax, ymax, xc, yc, inv_w, inv_h = where[:, 1, 2].tolist()
    assert (xmin, xmax, xc) == pytest.approx((0.0, 0.5, 0.25))
    assert (ymin, ymax, yc) == pytest.approx((0.0, 1.0, 0.5))
    assert (inv_w, inv_h) == pytest.approx((0.25, 0.5))
    assert torch.equal(spatial_channels(2, 4, 2), where[4:6])
    with pytest.raises(ValueError):
        spatial_channels(2, 4, 3)


def _small(upsample: bool, spatial: int = 8) -> TextObjSeg:
    torch.manual_seed(0)
    return TextObjSeg(SmallFcnMap("tiny", pretrained=False, dim=16), vocab_size=20, embed_dim=8, text_hidden=12,
                      classifier_hidden=10, spatial=spatial, upsample=upsample)


def test_shapes_low_and_high_resolution():
    images, tokens, lengths = torch.rand(2, 3, 64, 64), torch.tensor([[3, 4, 0], [5, 0, 0]]), torch.tensor([2, 1])
    assert _small(False)(images, tokens, lengths).shape == (2, 1, 8, 8)
    assert _small(True)(images, tokens, lengths).shape == (2, 1, 64, 64)
    assert _small(False, spatial=2)(images, tokens, lengths).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("spatial", [8, 2])
def test_the_factored_classifier_equals_the_1x1_convs_over_the_tiled_concatenation(spatial):
    """coarse() sums three matmuls instead of running the 1x1 convs over [visual, tiled text, where]."""
    model = _small(False, spatial).eval()
    images, tokens, lengths = torch.rand(2, 3, 64, 64), torch.tensor([[3, 4, 0], [5, 0, 0]]), torch.tensor([2, 1])
    with torch.no_grad():
        body = model.image_net.body(images)
        fmap = model.image_net.fc(F.relu(body))  # the head as the nn.Conv2d it is stored as
        visual = F.normalize(fmap, dim=1)
        b, _, h, w = visual.shape
        text = model.text(tokens, lengths)[:, :, None, None].expand(-1, -1, h, w)
        where = spatial_channels(h, w, spatial).expand(b, -1, -1, -1)
        reference = model.classifier(torch.cat([visual, text, where], dim=1))
        assert torch.allclose(model.image_net.head(body), fmap, atol=1e-6)
        assert torch.allclose(model(images, tokens, lengths), reference, atol=1e-6)


@pytest.mark.parametrize("upsample", [False, True])
def test_expressions_sharing_an_image_get_the_scores_and_gradients_of_repeated_images(upsample):
    """image_of runs the image side once per image: the same scores, and the same gradients for every
    parameter, as feeding each expression its own copy of its image (the body fixed, as the recipe has
    it: a trained body's batch norm would see each image once instead of once per expression)."""
    torch.manual_seed(0)
    model = TextObjSeg(SmallFcnMap("tiny", pretrained=False, dim=16), vocab_size=20, embed_dim=8, text_hidden=12,
                       classifier_hidden=10, upsample=upsample, freeze_conv=True).train()
    images = torch.rand(2, 3, 64, 64)
    tokens = torch.tensor([[3, 4, 0], [5, 0, 0], [6, 7, 8], [9, 3, 0]])
    lengths, image_of = torch.tensor([2, 1, 3, 2]), torch.tensor([0, 0, 1, 0])
    shared = model(images, tokens, lengths, image_of=image_of)
    repeated = model(images[image_of], tokens, lengths)
    assert shared.shape == repeated.shape == ((4, 1, 64, 64) if upsample else (4, 1, 8, 8))
    assert torch.allclose(shared, repeated, atol=1e-6)
    weights = torch.randn_like(shared)
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad((shared * weights).sum(), params)
    want = torch.autograd.grad((repeated * weights).sum(), params)
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))


def test_the_text_state_is_taken_at_the_last_word():
    model = _small(False).eval()
    tokens = torch.tensor([[3, 4, 0, 0], [3, 4, 9, 9]])
    h = model.text(tokens, torch.tensor([2, 2]))
    assert torch.allclose(h[0], h[1]) and torch.allclose(h.norm(dim=1), torch.ones(2))


def test_weighted_logistic_loss_by_hand():
    scores = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    labels = torch.tensor([[1, 0], [1, 0]])
    sp = F.softplus
    expected = (3 * sp(torch.tensor(-0.0)) + sp(torch.tensor(2.0)) + 3 * sp(torch.tensor(1.0)) + sp(torch.tensor(0.5))) / 4
    assert weighted_logistic_loss(scores, labels, 3.0, 1.0) == pytest.approx(float(expected))


def test_weighted_logistic_loss_equals_the_two_softplus_terms_far_from_zero():
    """The fused kernel against the Sec. 3.4 sum written out, on scores up to +-40 (no overflow either way)."""
    torch.manual_seed(0)
    scores = (40 * torch.rand(4, 16, 16) - 20).requires_grad_()
    labels = (torch.rand(4, 16, 16) < 0.3).to(torch.uint8)
    y = labels.float()
    written = (1.0 * y * F.softplus(-scores) + (1 / 3) * (1 - y) * F.softplus(scores)).mean()
    fused = weighted_logistic_loss(scores, labels, 1.0, 1 / 3)
    assert torch.isfinite(fused) and fused.item() == pytest.approx(written.item(), rel=1e-6)
    assert torch.allclose(torch.autograd.grad(fused, scores)[0], torch.autograd.grad(written, scores)[0], atol=1e-9)


def test_weight_decay_on_weights_only():
    model = _small(True)
    decayed, plain = decay_groups(model, 5e-4)
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert all("weight" in n and "bias" not in n for n in decayed_names)
    assert "text.lstm.weight_ih_l0" in decayed_names and "classifier.0.weight" in decayed_names
    # Neither biases nor the word embedding (the released code decays `weights`/`Matrix` variables only).
    assert "text.embed.weight" in plain_names and "classifier.0.bias" in plain_names
