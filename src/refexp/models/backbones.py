"""Image backbones: `build_backbone(name, pretrained) -> Backbone` (a module plus its channel count).

A Backbone maps images as floats in [0, 1], (B, 3, H, W), to a feature map (B, C, H/s, W/s);
ImageNet mean/std normalisation happens inside, so callers never normalise twice.

- `tiny`: a 4-conv CNN (stride 8, 128 channels) for the embedded default on CPU. It has no ImageNet
  weights: its `pretrained: true` means the checkpoint of the pretrain_backbone stage
  (refexp.training.backbone: per-pixel category and colour on the COCO train2014 images), passed as
  `weights_file`. Without that file it is an error, never a silent random init.
- `resnet18`: torchvision ResNet-18 up to layer4 (stride 32, 512 channels).
- `vgg16`: torchvision VGG-16 conv5_3 after ReLU, the papers' choice (stride 16, 512 channels).

With `pretrained=True` the ImageNet weights come through torchvision's weights API
(ResNet18_Weights.IMAGENET1K_V1, VGG16_Weights.IMAGENET1K_V1), i.e. from $TORCH_HOME/hub/checkpoints
when cached there, downloaded otherwise; torch.hub loads them with weights_only=True.
`pretrained=False` gives torchvision's random init.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("tiny", "resnet18", "vgg16")
# Output channels of each backbone (what a cached pooled feature vector holds).
BACKBONE_CHANNELS = {"tiny": 128, "resnet18": 512, "vgg16": 512}


class Backbone(nn.Module):
    """Normalise, then run the body: (B, 3, H, W) in [0, 1] -> (B, C, h, w)."""

    def __init__(self, body: nn.Module, channels: int, stride: int, name: str):
        super().__init__()
        self.body = body
        self.channels = channels
        self.stride = stride
        self.name = name
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body((images - self.mean) / self.std)


def _tiny() -> tuple[nn.Module, int, int]:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    body = nn.Sequential(*block(3, 32, 2), *block(32, 64, 2), *block(64, 128, 2), *block(128, 128, 1))
    return body, 128, 8


def _resnet18(pretrained: bool) -> tuple[nn.Module, int, int]:
    from torchvision.models import ResNet18_Weights, resnet18

    net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return body, 512, 32


def _vgg16(pretrained: bool) -> tuple[nn.Module, int, int]:
    from torchvision.models import VGG16_Weights, vgg16

    net = vgg16(weights=VGG16_Weights.IMAGENET1K_V1 if pretrained else None)
    # features[:-1] drops the last max-pool: the output is conv5_3 after its ReLU.
    return net.features[:-1], 512, 16


class BackboneWeightsError(ValueError):
    """Pretrained weights that are missing or do not fit the backbone, naming the file."""


def load_body_weights(body: nn.Module, weights_file: str | Path) -> None:
    """Load a saved backbone body (refexp.training.backbone.save_backbone) with weights_only=True."""
    path = Path(weights_file)
    if not path.is_file():
        raise BackboneWeightsError(f"{path}: pretrained backbone weights not found; run the "
                                   "pretrain_backbone stage (dvc repro pretrain_backbone) first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        body.load_state_dict(state)
    except (RuntimeError, KeyError, EOFError, OSError, ValueError) as err:
        raise BackboneWeightsError(f"{path}: not weights of this backbone ({type(err).__name__}: {err})") from None


class Vgg16Fc8(nn.Module):
    """VGG-16's whole classifier: (B, 3, H, W) in [0, 1] -> fc8 (B, 1000), SCRC's x_box / x_context.

    The conv body, the 7x7 adaptive pool and fc6-fc8 of torchvision's vgg16 with ImageNet normalisation
    first; at the 224 x 224 input the network was trained on, this is exactly torchvision's logits."""

    dim = 1000

    def __init__(self, pretrained: bool):
        super().__init__()
        from torchvision.models import VGG16_Weights, vgg16

        net = vgg16(weights=VGG16_Weights.IMAGENET1K_V1 if pretrained else None)
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.avgpool(self.features((images - self.mean) / self.std))  # (B, 512, 7, 7)
        return self.classifier(torch.flatten(fmap, 1))  # (B, 1000)


def build_backbone(name: str, pretrained: bool, weights_file: str | Path | None = None) -> Backbone:
    """`weights_file`: the pretrained `tiny` body (what `pretrained` means for it); ignored by the
    torchvision backbones, whose pretrained weights are ImageNet's."""
    if name == "tiny":
        body, channels, stride = _tiny()
        if pretrained:
            if weights_file is None:
                raise BackboneWeightsError("backbone 'tiny' with pretrained: true needs the pretrain_backbone "
                                           "checkpoint (no weights file was given)")
            load_body_weights(body, weights_file)
    elif name == "resnet18":
        body, channels, stride = _resnet18(pretrained)
    elif name == "vgg16":
        body, channels, stride = _vgg16(pretrained)
    else:
        raise ValueError(f"unknown backbone '{name}' (have {', '.join(BACKBONES)})")
    return Backbone(body, channels, stride, name)

