"""Backbones: shapes, random init, and the ImageNet-weights path through torchvision's cache."""
import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from refexp.models.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneWeightsError, Vgg16Fc8, build_backbone
from refexp.models.layers import ImageDescriptor, ImageEncoder


def test_tiny_shapes_and_backward():
    bb = build_backbone("tiny", pretrained=False)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = bb(x)
    assert y.shape == (2, bb.channels, 32 // bb.stride, 32 // bb.stride)
    y.sum().backward()
    assert x.grad is not None


def test_tiny_pretrained_means_the_pretrain_backbone_checkpoint(tmp_path):
    with pytest.raises(BackboneWeightsError, match="needs the pretrain_backbone checkpoint"):
        build_backbone("tiny", pretrained=True)
    with pytest.raises(BackboneWeightsError, match="missing.pt.*not found"):
        build_backbone("tiny", pretrained=True, weights_file=tmp_path / "missing.pt")
    trained = build_backbone("tiny", pretrained=False)
    with torch.no_grad():
        for p in trained.body.parameters():
            p.fill_(0.25)
    torch.save(trained.body.state_dict(), tmp_path / "backbone.pt")
    loaded = build_backbone("tiny", pretrained=True, weights_file=tmp_path / "backbone.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(BackboneWeightsError, match="other.pt: not weights of this backbone"):
        build_backbone("tiny", pretrained=True, weights_file=tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        build_backbone("alexnet", pretrained=False)


def test_resnet18_loads_imagenet_weights_from_torch_home(tmp_path, monkeypatch):
    # A stand-in for the ImageNet file, saved under the name torchvision expects: torchvision
    # must load it from the cache (no network here) rather than download or random-init.
    reference = resnet18(weights=None)
    with torch.no_grad():
        reference.conv1.weight.fill_(0.125)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    bb = build_backbone("resnet18", pretrained=True)
    assert torch.all(bb.body[0].weight == 0.125)
    random_bb = build_backbone("resnet18", pretrained=False)
    assert not torch.all(random_bb.body[0].weight == 0.125)
    assert bb(torch.rand(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_vgg16_is_conv5_3():
    bb = build_backbone("vgg16", pretrained=False)
    assert isinstance(bb.body[-1], torch.nn.ReLU) and bb.channels == 512
    with torch.no_grad():
        assert bb(torch.rand(1, 3, 32, 32)).shape == (1, 512, 2, 2)


def test_vgg16_fc8_is_the_classifier_output_at_224():
    # SCRC's x_box: at the 224 x 224 input VGG-16 was trained on, fc8 is torchvision's logits.
    from torchvision.models import vgg16

    torch.manual_seed(0)
    fc8 = Vgg16Fc8(pretrained=False).eval()
    reference = vgg16(weights=None).eval()
    reference.load_state_dict({k: v for k, v in fc8.state_dict().items()})
    x = torch.rand(1, 3, 224, 224)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(fc8(x), reference(normalised))
    descriptor = ImageDescriptor("vgg16", False, "fc8")
    assert descriptor.dim == 1000
    with pytest.raises(ValueError, match="enter the LSTMs as is"):
        ImageEncoder("vgg16", False, 64, feature="fc8")
    with pytest.raises(ValueError, match="fc8 features need the vgg16 backbone"):
        ImageDescriptor("tiny", False, "fc8")
