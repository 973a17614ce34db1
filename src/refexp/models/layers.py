"""Layers shared by the models.

- `crop_and_resize`: box crops of uint8 images at a fixed size via torchvision.ops.roi_align
  (bilinear, averaged over ceil(box/size) samples per output cell, so large boxes are
  anti-aliased). The whole image is the box [0, 0, S, S], so "image" and "box" views of one
  picture pass through exactly the same code.
- `PooledImageEncoder`: backbone -> global average pool -> linear projection (the papers' fc8
  vector, here of size `out_dim`).
- `sequence_log_likelihood`: per-sequence sum of log p(target_t | ...) over non-pad targets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from refexp.models.backbones import BACKBONE_CHANNELS, build_backbone


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


class PooledImageEncoder(nn.Module):
    """(K, 3, s, s) in [0, 1] -> (K, out_dim): backbone, global average pool, linear.

    cached=True: a frozen backbone whose pooled features come from the feature cache; only the
    projection exists (call `proj` on the cached (K, C) vectors)."""

    def __init__(self, backbone: str, pretrained: bool, out_dim: int, cached: bool = False):
        super().__init__()
        if cached:
            channels = BACKBONE_CHANNELS[backbone]
        else:
            self.backbone = build_backbone(backbone, pretrained)
            channels = self.backbone.channels
        self.proj = nn.Linear(channels, out_dim)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone(crops)  # (K, C, h, w)
        return self.proj(fmap.mean(dim=(2, 3)))  # (K, out_dim)


def sequence_log_likelihood(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, V), targets (B, T) -> (sum of log p over non-pad targets (B,), lengths (B,))."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    mask = targets != pad_id
    return (logp * mask).sum(dim=1), mask.sum(dim=1)
