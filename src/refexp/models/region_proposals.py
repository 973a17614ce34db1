"""The GRN paper's proposal detector (Sec. 3.1, 4.2: "we follow DenseCap and pretrain a separate RPN on the
training data"): a Faster R-CNN region proposal network on the frozen backbone's one feature map.

Built from torchvision.models.detection.rpn alone: `AnchorGenerator` (one feature level: every size x every
aspect ratio at each map cell), `RPNHead` (3x3 conv + ReLU, 1x1 objectness and box deltas) and
`RegionProposalNetwork` (anchor matching at fg/bg IoU, balanced anchor sampling, the objectness BCE and the
smooth-L1 box loss, decoding, top-n, NMS). Only the wiring is ours:

- the input is the cached backbone map (the backbone is frozen, so a map computed once is exact), and the
  letterboxed input's S x S size stands in for the image tensor the anchor generator reads its strides from;
- `loss` computes the two RPN losses without the proposal filtering torchvision also runs while training
  (the losses never read the proposals);
- `forward` returns each image's proposals *and* their objectness probabilities (torchvision's forward drops
  the scores, which the proposals table keeps).

Boxes are torchvision's: continuous (x1, y1, x2, y2) on the S x S input, a pixel i spanning [i, i + 1).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers


class RegionProposals(nn.Module):
    """RPN over one (B, C, h, w) map of an S x S input (stride S / h)."""

    def __init__(self, channels: int, image_size: int, anchor_sizes: list[int], aspect_ratios: list[float],
                 fg_iou: float = 0.7, bg_iou: float = 0.3, anchors_per_image: int = 256,
                 positive_fraction: float = 0.5, pre_nms_top_n: int = 2000, post_nms_top_n: int = 300,
                 nms_iou: float = 0.7):
        super().__init__()
        self.image_size = int(image_size)
        anchors = AnchorGenerator(sizes=(tuple(int(s) for s in anchor_sizes),),
                                  aspect_ratios=(tuple(float(r) for r in aspect_ratios),))
        head = RPNHead(channels, anchors.num_anchors_per_location()[0])
        # The same top-n in both modes: training never filters here (see `loss`).
        self.rpn = RegionProposalNetwork(
            anchors, head, fg_iou_thresh=fg_iou, bg_iou_thresh=bg_iou, batch_size_per_image=anchors_per_image,
            positive_fraction=positive_fraction,
            pre_nms_top_n={"training": pre_nms_top_n, "testing": pre_nms_top_n},
            post_nms_top_n={"training": post_nms_top_n, "testing": post_nms_top_n}, nms_thresh=nms_iou)

    @classmethod
    def from_config(cls, rpn, channels: int, image_size: int) -> "RegionProposals":
        """rpn: a RegionProposalConfig (grn.rpn)."""
        return cls(channels, image_size, rpn.anchor_sizes, rpn.aspect_ratios, rpn.fg_iou, rpn.bg_iou,
                   rpn.anchors_per_image, rpn.positive_fraction, rpn.pre_nms_top_n, rpn.proposals_per_image,
                   rpn.nms_iou)

    @property
    def anchors_per_location(self) -> int:
        return self.rpn.anchor_generator.num_anchors_per_location()[0]

    def anchor_shapes(self) -> torch.Tensor:
        """(A, 4) the zero-centred anchor boxes (every size x aspect ratio), as AnchorGenerator makes them."""
        generator = self.rpn.anchor_generator
        return generator.generate_anchors(generator.sizes[0], generator.aspect_ratios[0])

    def _image_list(self, maps: torch.Tensor) -> ImageList:
        # The anchor generator reads only the input's H x W (for the stride) from the tensor: an expanded
        # zero-size-in-memory view stands in for the images the cached maps came from.
        b = maps.shape[0]
        stand_in = maps.new_zeros(()).expand(b, 1, self.image_size, self.image_size)
        return ImageList(stand_in, [(self.image_size, self.image_size)] * b)

    def anchors(self, maps: torch.Tensor) -> list[torch.Tensor]:
        """maps (B, C, h, w) -> B tensors (h * w * A, 4): every anchor, location-major."""
        return self.rpn.anchor_generator(self._image_list(maps), [maps])

    def _predict(self, maps: torch.Tensor):
        objectness, deltas = self.rpn.head([maps])  # [(B, A, h, w)], [(B, 4A, h, w)]
        anchors = self.anchors(maps)  # B x (h*w*A, 4)
        per_level = [o[0].numel() for o in objectness]  # [h*w*A]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)  # (B*h*w*A, 1), (B*h*w*A, 4)
        return objectness, deltas, anchors, per_level

    def loss(self, maps: torch.Tensor, targets: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """maps (B, C, h, w); targets: B tensors (G_i, 4) of ground-truth boxes on the input (G_i may be 0)
        -> {"loss_objectness": (), "loss_rpn_box_reg": ()} (torchvision's RPN losses)."""
        objectness, deltas, anchors, _ = self._predict(maps)
        labels, matched = self.rpn.assign_targets_to_anchors(anchors, [{"boxes": t} for t in targets])
        regression_targets = self.rpn.box_coder.encode(matched, anchors)  # B x (h*w*A, 4)
        loss_objectness, loss_box = self.rpn.compute_loss(objectness, deltas, labels, regression_targets)
        return {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}

    @torch.no_grad()
    def forward(self, maps: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """maps (B, C, h, w) -> (B tensors (P_i, 4) proposals on the input, clipped to it, best first;
        B tensors (P_i,) objectness probabilities), P_i <= post_nms_top_n after NMS at nms_iou."""
        objectness, deltas, anchors, per_level = self._predict(maps)
        proposals = self.rpn.box_coder.decode(deltas.detach(), anchors).view(maps.shape[0], -1, 4)  # (B, h*w*A, 4)
        sizes = [(self.image_size, self.image_size)] * maps.shape[0]
        return self.rpn.filter_proposals(proposals, objectness, sizes, per_level)
