"""The embedded default's stand-in for ImageNet pretraining: a backbone with two 1x1 heads.

Every paper starts its CNN from ImageNet weights; the `tiny` backbone of the embedded default has
none, so the pretrain_backbone stage (refexp.training.backbone) trains it once on the COCO train2014
images with a supervised dense task, and `pretrained: true` then means that checkpoint:

- category head: per-cell logits over background + the COCO categories (semantic segmentation from
  the instance masks), upsampled bilinearly to the input (as an FCN);
- colour head: the RGB of every input pixel, each cell predicting the stride x stride pixels it covers.
  The referring expressions name colours ("the red circle") and stuff ("the water") that a
  category-only objective would teach the CNN to ignore (every stuff pixel is "background" in COCO
  2014); this target keeps colour and texture in the features that the frozen-backbone models read.

Only the backbone's body is kept (refexp.training.backbone.save_backbone); the heads are dropped, as an
ImageNet classifier's last layer is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refexp.models.backbones import Backbone


class DensePretrainer(nn.Module):
    def __init__(self, backbone: Backbone, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.category = nn.Conv2d(backbone.channels, n_classes, 1)
        # Each cell predicts the RGB of every pixel it covers (s x s of them, then pixel-shuffled), so
        # the features keep texture as well as colour: stuff regions (sky, water, grass) differ by both.
        self.colour = nn.Sequential(nn.Conv2d(backbone.channels, 3 * backbone.stride ** 2, 1),
                                    nn.PixelShuffle(backbone.stride))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] -> category logits (B, K, H, W), colour (B, 3, H, W) in [0, 1]."""
        fmap = self.backbone(images)  # (B, C, H/s, W/s)
        size = images.shape[-2:]
        logits = F.interpolate(self.category(fmap), size=size, mode="bilinear", align_corners=False)
        colour = torch.sigmoid(self.colour(fmap))  # (B, 3, h * s, w * s)
        if colour.shape[-2:] != size:  # inputs that are not a multiple of the stride
            colour = F.interpolate(colour, size=size, mode="bilinear", align_corners=False)
        return logits, colour
