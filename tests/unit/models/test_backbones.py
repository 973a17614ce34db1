"""Backbones: shapes, random init, and the ImageNet-weights path through torchvision's cache."""
import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from refexp.models.backbones import build_backbone


def test_tiny_shapes_and_backward():
    bb = build_backbone("tiny", pretrained=False)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = bb(x)
    assert y.shape == (2, bb.channels, 32 // bb.stride, 32 // bb.stride)
    y.sum().backward()
    assert x.grad is not None


def test_tiny_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_backbone("tiny", pretrained=True)
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
