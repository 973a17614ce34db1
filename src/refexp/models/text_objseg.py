"""Segmentation from natural language expressions (Hu, Rohrbach, Darrell, ECCV 2016), Section 3, as in
the released code (ronghanghu/text_objseg) where the two differ:

- image: a fully convolutional feature map at stride s, L2-normalised at each location (Sec. 3.1):
  - `VggFc8Map` (real runs): VGG-16 conv1-conv5 with all five pools (s = 32), then fc6/fc7/fc8 as
    convolutions (7x7 with "same" padding, 1x1, 1x1) converted from torchvision's ImageNet classifier,
    so Dim = 1000; at a 224 x 224 input the centre cell of the map is exactly the classifier's output;
  - `SmallFcnMap` (embedded default): a backbone's map at its stride, then a 1x1 "fc" head to Dim.
- spatial channels at each cell: the code's 8 (xmin, ymin, xmax, ymax, xc, yc, 1/w, 1/h, in [-1, 1])
  or the paper's 2 (xc, yc);
- text: word embeddings -> LSTM; the final hidden state h_T (at each expression's last word),
  L2-normalised, tiled over the map (Sec. 3.2);
- classifier: 1x1 conv to Dcls = 500 with ReLU, then 1x1 conv to 1: the coarse response map (Sec. 3.3);
- upsampling (high resolution): a 2s x 2s deconvolution with stride s, initialised to bilinear
  interpolation and trained; the low-resolution model has none (its coarse map is the output).

Tensor shapes are noted as (B batch, C channels, h x w map cells, H x W input pixels, L words).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refexp.models.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone


class VggFc8Map(nn.Module):
    """VGG-16 to its fc8 as a map: (B, 3, H, W) in [0, 1] -> (B, 1000, H/32, W/32)."""

    stride, dim = 32, 1000

    def __init__(self, pretrained: bool):
        super().__init__()
        from torchvision.models import VGG16_Weights, vgg16

        net = vgg16(weights=VGG16_Weights.IMAGENET1K_V1 if pretrained else None)
        self.features = net.features  # conv1_1 .. pool5, stride 32
        fc6, fc7, fc8 = (m for m in net.classifier if isinstance(m, nn.Linear))
        self.fc6 = nn.Conv2d(512, 4096, 7, padding=3)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.fc8 = nn.Conv2d(4096, 1000, 1)
        with torch.no_grad():  # the classifier's weights, reshaped: (out, in) -> (out, in, k, k)
            self.fc6.weight.copy_(fc6.weight.view(4096, 512, 7, 7))
            self.fc7.weight.copy_(fc7.weight.view(4096, 4096, 1, 1))
            self.fc8.weight.copy_(fc8.weight.view(1000, 4096, 1, 1))
            for conv, linear in ((self.fc6, fc6), (self.fc7, fc7), (self.fc8, fc8)):
                conv.bias.copy_(linear.bias)
        self.dropout = nn.Dropout(0.5)  # where torchvision's classifier has it (after fc6 and fc7)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def conv_body(self) -> nn.Module:
        """conv1-conv5 (fixed in the released recipe for VGG-16)."""
        return self.features

    def body(self, images: torch.Tensor) -> torch.Tensor:
        return self.features((images - self.mean) / self.std)  # (B, 512, h, w) pool5

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.fc6(x)))  # (B, 4096, h, w)
        x = self.dropout(F.relu(self.fc7(x)))  # (B, 4096, h, w)
        return self.fc8(x)  # (B, 1000, h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


class SmallFcnMap(nn.Module):
    """A backbone's map, then a 1x1 "fc" head: (B, 3, H, W) -> (B, dim, H/s, W/s)."""

    def __init__(self, backbone: str, pretrained: bool, dim: int, weights_file=None):
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained, weights_file)
        self.stride, self.dim = self.backbone.stride, dim
        self.fc = nn.Conv2d(self.backbone.channels, dim, 1)

    def conv_body(self) -> nn.Module:
        return self.backbone

    def body(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)  # (B, C, h, w)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        # The 1x1 conv as a matmul over channels-last cells: the same map, ~3x faster on CPU (tests).
        cells = F.linear(F.relu(x).permute(0, 2, 3, 1), self.fc.weight[:, :, 0, 0], self.fc.bias)  # (B, h, w, dim)
        return cells.permute(0, 3, 1, 2)  # (B, dim, h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def spatial_channels(h: int, w: int, kind: int, device=None) -> torch.Tensor:
    """(kind, h, w) coordinates of each cell in [-1, 1]: 8 = the code's, 2 = the paper's (centres)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")  # (h, w) each
    xmin, xmax, xc = xx / w * 2 - 1, (xx + 1) / w * 2 - 1, (xx + 0.5) / w * 2 - 1
    ymin, ymax, yc = yy / h * 2 - 1, (yy + 1) / h * 2 - 1, (yy + 0.5) / h * 2 - 1
    if kind == 2:
        return torch.stack([xc, yc])
    if kind == 8:
        ones = torch.ones(h, w, device=device)
        return torch.stack([xmin, ymin, xmax, ymax, xc, yc, ones / w, ones / h])
    raise ValueError(f"spatial channels must be 8 (the code) or 2 (the paper), not {kind}")


def bilinear_kernel(size: int) -> torch.Tensor:
    """(size, size) bilinear interpolation filter of FCN's deconvolution initialisation."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt = 1 - (og - centre).abs() / factor
    return filt[:, None] * filt[None, :]


class BilinearUpsample(nn.Module):
    """A 2s x 2s deconvolution with stride s, initialised to bilinear interpolation (trainable):
    (B, 1, h, w) -> (B, 1, h*s, w*s)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.deconv = nn.ConvTranspose2d(1, 1, 2 * stride, stride=stride, padding=stride // 2, bias=False)
        with torch.no_grad():
            self.deconv.weight.copy_(bilinear_kernel(2 * stride).view(1, 1, 2 * stride, 2 * stride))

    def forward(self, coarse: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if s % 2:
            return self.deconv(coarse)
        # The same deconvolution as a matmul (CPU's ConvTranspose2d with one channel and a 2s kernel is slow):
        # output tile (I, J), s x s, is the sum over a, b in {0, 1} of x[I-a, J-b] times the kernel's block
        # (a, b); the tiles, cropped by the padding s/2, are the (h*s, w*s) map (equal, tests).
        b, _, h, w = coarse.shape
        x = F.pad(coarse[:, 0], (1, 1, 1, 1))  # (B, h+2, w+2), x[i] at i+1
        shifted = torch.stack([x[:, 1 - a:h + 2 - a, 1 - c:w + 2 - c] for a in (0, 1) for c in (0, 1)], dim=-1)  # (B, h+1, w+1, 4)
        blocks = self.deconv.weight[0, 0].view(2, s, 2, s).permute(0, 2, 1, 3).reshape(4, s * s)  # (4, s*s)
        tiles = (shifted @ blocks).view(b, h + 1, w + 1, s, s).permute(0, 1, 3, 2, 4)  # (B, h+1, s, w+1, s)
        full = tiles.reshape(b, (h + 1) * s, (w + 1) * s)
        pad = s // 2
        return full[:, None, pad:pad + h * s, pad:pad + w * s]  # (B, 1, h*s, w*s)


class ExpressionEncoder(nn.Module):
    """(B, L) word ids (0 = pad), lengths (B,) -> h_T (B, hidden), L2-normalised."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, embeddings: torch.Tensor | None = None,
                 freeze_embeddings: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if embeddings is not None:
            with torch.no_grad():
                self.embed.weight.copy_(embeddings)
        self.embed.weight.requires_grad_(not freeze_embeddings)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.hidden = hidden

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))  # (B, L, hidden)
        last = (lengths.clamp(min=1) - 1).to(out.device)
        h_t = out[torch.arange(len(out), device=out.device), last]  # (B, hidden): the state after the last word
        return F.normalize(h_t, dim=1)


class TextObjSeg(nn.Module):
    """The LSTM + FCN segmentation model: images (B, 3, H, W) in [0, 1], tokens (B, L), lengths (B,)
    -> response scores (B, 1, h, w) (low resolution) or (B, 1, H, W) (high resolution, `upsample`)."""

    def __init__(self, image_net: nn.Module, vocab_size: int, embed_dim: int, text_hidden: int,
                 classifier_hidden: int = 500, spatial: int = 8, upsample: bool = False,
                 embeddings: torch.Tensor | None = None, freeze_embeddings: bool = False, freeze_conv: bool = False):
        super().__init__()
        self.image_net, self.spatial, self.freeze_conv = image_net, spatial, freeze_conv
        for p in image_net.conv_body().parameters():
            p.requires_grad_(not freeze_conv)
        self.text = ExpressionEncoder(vocab_size, embed_dim, text_hidden, embeddings, freeze_embeddings)
        d_star = image_net.dim + text_hidden + spatial
        self.classifier = nn.Sequential(nn.Conv2d(d_star, classifier_hidden, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(classifier_hidden, 1, 1))
        self.upsample = BilinearUpsample(image_net.stride) if upsample else None

    @property
    def stride(self) -> int:
        return self.image_net.stride

    def train(self, mode: bool = True) -> "TextObjSeg":
        super().train(mode)
        if self.freeze_conv:  # fixed layers keep their batch-norm statistics and no dropout
            self.image_net.conv_body().eval()
        return self

    def coarse(self, images: torch.Tensor | None, tokens: torch.Tensor, lengths: torch.Tensor,
               body_maps: torch.Tensor | None = None, image_of: torch.Tensor | None = None) -> torch.Tensor:
        """body_maps: the fixed conv body's output, precomputed (exact when freeze_conv: that part never
        changes and runs in eval mode), instead of images. image_of (B,): expression -> its image among
        the G images given (several expressions of one image share its image side); None: one image each."""
        fmap = self.image_net.head(body_maps) if body_maps is not None else self.image_net(images)
        visual = F.normalize(fmap, dim=1).permute(0, 2, 3, 1)  # (G, h, w, Dim), unit length per cell
        _, h, w, dim = visual.shape
        text = self.text(tokens, lengths)  # (B, Dtext)
        where = spatial_channels(h, w, self.spatial, visual.device).permute(1, 2, 0)  # (h, w, 8 or 2)
        # The first 1x1 conv over the concatenation [visual, tiled text, where] is a sum of three matmuls;
        # the text's term is computed once per expression and the visual term once per image instead of at
        # every cell of every expression (same scores, tests).
        first, last = self.classifier[0], self.classifier[2]
        weight = first.weight[:, :, 0, 0]  # (hidden, Dim + Dtext + spatial)
        seen = F.linear(visual, weight[:, :dim]) + F.linear(where, weight[:, dim + text.shape[1]:])  # (G, h, w, hidden)
        if image_of is not None:
            seen = seen[image_of]  # (B, h, w, hidden)
        hidden = seen + F.linear(text, weight[:, dim:dim + text.shape[1]], first.bias)[:, None, None, :]  # (B, h, w, hidden)
        scores = F.linear(F.relu(hidden), last.weight[:, :, 0, 0], last.bias)  # (B, h, w, 1)
        return scores.permute(0, 3, 1, 2)  # (B, 1, h, w)

    def forward(self, images: torch.Tensor | None, tokens: torch.Tensor, lengths: torch.Tensor,
                body_maps: torch.Tensor | None = None, image_of: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.coarse(images, tokens, lengths, body_maps, image_of)  # (B, 1, h, w)
        return self.upsample(scores) if self.upsample is not None else scores  # (B, 1, H, W) or (B, 1, h, w)


def weighted_logistic_loss(scores: torch.Tensor, labels: torch.Tensor, foreground: float, background: float
                           ) -> torch.Tensor:
    """Mean over pixels of alpha_f * y * log(1 + e^-s) + alpha_b * (1 - y) * log(1 + e^s) (Sec. 3.4): torch's
    logistic loss weighted per pixel by alpha_f or alpha_b (one fused kernel, ~3x faster than the sum)."""
    labels = labels.to(scores.dtype)
    return F.binary_cross_entropy_with_logits(scores, labels, weight=background + (foreground - background) * labels)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups with weight decay on weight matrices and kernels only: the released code decays
    neither biases nor the word embedding (its variables named `weights`/`Matrix` only)."""
    weights, others = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            decayed = (name.endswith("weight") or "weight_" in name) and p.dim() > 1 and "embed" not in name
            (weights if decayed else others).append(p)
    return [{"params": weights, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]


# ---------------------------------------------------------------- Table 1's trained baselines (Sec. 4.1)


class PerWordFcn(nn.Module):
    """The per-word segmentation baseline: one FCN, each of the N words an independent per-pixel
    logistic output (a pixel may carry several words): images (B, 3, H, W) -> logits (B, N, h, w)."""

    def __init__(self, image_net: nn.Module, n_words: int, freeze_conv: bool = True):
        super().__init__()
        self.image_net, self.freeze_conv = image_net, freeze_conv
        for p in image_net.conv_body().parameters():
            p.requires_grad_(not freeze_conv)
        self.words = nn.Conv2d(image_net.dim, n_words, 1)

    @property
    def stride(self) -> int:
        return self.image_net.stride

    def train(self, mode: bool = True) -> "PerWordFcn":
        super().train(mode)
        if self.freeze_conv:
            self.image_net.conv_body().eval()
        return self

    def forward(self, images: torch.Tensor | None, body_maps: torch.Tensor | None = None) -> torch.Tensor:
        fmap = self.image_net.head(body_maps) if body_maps is not None else self.image_net(images)  # (B, Dim, h, w)
        return self.words(F.relu(fmap))  # (B, N, h, w)


def per_word_labels(masks: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """masks (B, h, w) {0, 1}, words (B, N) {0, 1} -> (B, N, h, w): a foreground pixel carries the words
    of its expression, a background pixel none (Sec. 4.1)."""
    return masks[:, None].float() * words[:, :, None, None].float()


def combine_word_scores(scores: torch.Tensor, present: torch.Tensor, how: str) -> torch.Tensor:
    """scores (B, N, H, W) logits, present (B, N) bool -> (B, H, W) scores, foreground where > 0, from
    the words of the expression among the N:
    - average: their mean probability, minus 1/2;
    - intersection: their minimum logit (every word's map positive);
    - union: their maximum logit (any word's map positive).
    No present word: -1 everywhere, all background (the paper's 2.83% of test expressions)."""
    on = present[:, :, None, None]  # (B, N, 1, 1)
    count = present.sum(1)[:, None, None]  # (B, 1, 1)
    if how == "average":
        combined = (torch.sigmoid(scores) * on).sum(1) / count.clamp(min=1) - 0.5
    elif how == "intersection":
        combined = scores.masked_fill(~on, float("inf")).amin(1)
    elif how == "union":
        combined = scores.masked_fill(~on, float("-inf")).amax(1)
    else:
        raise ValueError(f"combine must be average, intersection or union, not {how!r}")
    return torch.where(count > 0, combined, torch.full_like(combined, -1.0))  # (B, H, W)


def box_spatial(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 4) inclusive input-pixel boxes -> (..., 5): x1, y1, x2, y2 in [-1, 1] and the area fraction
    (GroundeR's spatial feature)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1 + 1).clamp(min=0) * (y2 - y1 + 1).clamp(min=0) / (size * size)
    return torch.stack([x1 / size * 2 - 1, y1 / size * 2 - 1, (x2 + 1) / size * 2 - 1, (y2 + 1) / size * 2 - 1, area], -1)


class ProposalScorer(nn.Module):
    """A phrase-conditioned score per proposal: the LSTM-encoded phrase and each proposal's visual +
    spatial feature, concatenated, through FC-ReLU-FC (supervised GroundeR's attention, Rohrbach et al.
    2016; the segmentation-proposal classifier of Sec. 4.1 is the same network with a logistic loss).

    proposals (B, K, Dv) features, valid (B, K) bool, tokens (B, L), lengths (B,) -> logits (B, K),
    -inf where a proposal slot is padding."""

    def __init__(self, visual_dim: int, vocab_size: int, embed_dim: int, text_hidden: int, hidden: int):
        super().__init__()
        self.text = ExpressionEncoder(vocab_size, embed_dim, text_hidden)
        self.visual_norm = nn.LayerNorm(visual_dim)  # the pooled maps' scale varies with the backbone
        self.score = nn.Sequential(nn.Linear(visual_dim + text_hidden, hidden), nn.ReLU(inplace=True),
                                   nn.Linear(hidden, 1))

    def forward(self, proposals: torch.Tensor, valid: torch.Tensor, tokens: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        b, k, _ = proposals.shape
        text = self.text(tokens, lengths)[:, None].expand(-1, k, -1)  # (B, K, Dtext)
        logits = self.score(torch.cat([self.visual_norm(proposals), text], -1))[..., 0]  # (B, K)
        return logits.masked_fill(~valid, float("-inf"))


def pooled_proposal_features(body_map: torch.Tensor, boxes: torch.Tensor, stride: int, roi_size: int,
                             masks: torch.Tensor | None = None) -> torch.Tensor:
    """One image's proposals on its fixed conv body's map: body_map (C, h, w), boxes (K, 4) inclusive
    input pixels, masks (K, h, w) cell coverage in [0, 1] or None -> (K, C * roi_size^2): roi_align over
    each box (of the map multiplied by the proposal's mask coverage, for segmentation proposals: the
    masked crop taken on the shared map rather than by re-running the CNN on each crop)."""
    from torchvision.ops import roi_align

    boxes = boxes.to(body_map.device, torch.float32)
    rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1)  # (K, 5): batch index, x1, y1, x2, y2
    rois[:, 3:] += 1  # inclusive pixel boxes -> continuous coordinates
    if masks is None:
        pooled = roi_align(body_map[None], rois, roi_size, spatial_scale=1 / stride, aligned=True)
    else:
        rois[:, 0] = torch.arange(len(boxes), device=rois.device)
        pooled = roi_align(body_map[None] * masks[:, None], rois, roi_size, spatial_scale=1 / stride, aligned=True)
    return pooled.flatten(1)  # (K, C * roi_size^2)
