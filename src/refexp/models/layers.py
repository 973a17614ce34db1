"""Layers shared by the models.

- `crop_and_resize`: box crops of uint8 images at a fixed size via torchvision.ops.roi_align
  (bilinear, averaged over ceil(box/size) samples per output cell, so large boxes are
  anti-aliased). The whole image is the box [0, 0, S, S], so "image" and "box" views of one
  picture pass through exactly the same code.
- `ImageDescriptor` / `ImageEncoder`: a crop's descriptor, the backbone's average-pooled map or
  VGG-16's fc8 (the SCRC paper's x_box), then a linear projection to `out_dim` (pooled) or none (fc8).
- `sequence_log_likelihood`: per-sequence sum of log p(target_t | ...) over non-pad targets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from refexp.models.backbones import BACKBONE_CHANNELS, Vgg16Fc8, build_backbone


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int,
                    image_index: torch.Tensor | None = None) -> torch.Tensor:
    """images uint8/float (N, 3, S, S); boxes (K, 4) continuous [x1, y1, x2, y2) in image pixels;
    image_index (K,) which image each box is on (default: box k on image k).
    Returns float crops (K, 3, size, size) in [0, 1]."""
    imgs = images.float() / 255.0 if images.dtype == torch.uint8 else images
    if image_index is None:
        image_index = torch.arange(len(boxes), device=boxes.device)
    rois = torch.cat([image_index.to(boxes.dtype)[:, None], boxes], dim=1)  # (K, 5)
    # aligned=True: pixel i covers [i, i + 1), matching the continuous box convention.
    return roi_align(imgs, rois.to(imgs.dtype), output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def descriptor_dim(backbone: str, feature: str) -> int:
    """Size of an ImageDescriptor's output (what a feature cache row holds)."""
    return 1000 if feature == "fc8" else BACKBONE_CHANNELS[backbone]


class ImageDescriptor(nn.Module):
    """(K, 3, s, s) in [0, 1] -> (K, D): the backbone's map average-pooled (feature "pooled", D = its
    channels), or VGG-16's fc8 (feature "fc8", D = 1000: SCRC's x_box / x_context)."""

    def __init__(self, backbone: str, pretrained: bool, feature: str = "pooled", weights_file: str | None = None):
        super().__init__()
        if feature == "fc8":
            if backbone != "vgg16":
                raise ValueError(f"fc8 features need the vgg16 backbone, not '{backbone}'")
            self.net = Vgg16Fc8(pretrained)
        elif feature == "pooled":
            self.net = build_backbone(backbone, pretrained, weights_file)
        else:
            raise ValueError(f"unknown image feature '{feature}' (fc8 or pooled)")
        self.feature = feature
        self.dim = descriptor_dim(backbone, feature)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        out = self.net(crops)  # (K, 1000) fc8, or (K, C, h, w)
        return out if self.feature == "fc8" else out.mean(dim=(2, 3))  # (K, D)


class ImageEncoder(nn.Module):
    """(K, 3, s, s) in [0, 1] -> (K, out_dim): an ImageDescriptor, then a linear projection (pooled
    features) or nothing (fc8, which the paper feeds to the LSTMs as is; out_dim must be 1000).

    cached=True: a frozen backbone whose descriptors come from the feature cache; only the projection
    exists (call `proj` on the cached (K, D) vectors)."""

    def __init__(self, backbone: str, pretrained: bool, out_dim: int, cached: bool = False,
                 weights_file: str | None = None, feature: str = "pooled"):
        super().__init__()
        if cached:
            dim = descriptor_dim(backbone, feature)
        else:
            self.descriptor = ImageDescriptor(backbone, pretrained, feature, weights_file)
            dim = self.descriptor.dim
        if feature == "fc8":
            if out_dim != dim:
                raise ValueError(f"fc8 features are {dim}-d and enter the LSTMs as is; got feature_dim {out_dim}")
            self.proj = nn.Identity()
        else:
            self.proj = nn.Linear(dim, out_dim)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.proj(self.descriptor(crops))  # (K, out_dim)


def sequence_log_likelihood(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, V), targets (B, T) -> (sum of log p over non-pad targets (B,), lengths (B,))."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    mask = targets != pad_id
    return (logp * mask).sum(dim=1), mask.sum(dim=1)
