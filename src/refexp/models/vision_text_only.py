"""Vision-only and text-only data for segmentation from referring expressions (Hu et al.'s follow-up
to the ECCV 2016 LSTM-CNN), Section 2:

- 2.1 word embedding: fixed GloVe vectors as the LSTM-CNN's embedding matrix (models.text_objseg's
  TextObjSeg with `embeddings` and `freeze_embeddings`; nothing here);
- 2.2 synthesized expressions: class names as extra training data (training.vision_text_only);
- 2.3 category-based segmentation: `CategoryFcn` gives p_image over the M classes (+ background) at each
  pixel, `ExpressionClassifier` gives p_text over the M classes, and p_fg = <p_image, p_text> (Eq. 1,
  `category_foreground`);
- 2.4 full model: p_fg = alpha * p1 + (1 - alpha) * p2 (Eq. 2, `FusedSegmentation`), alpha in (0, 1) as
  the sigmoid of a learned logit.

Tensor shapes: B batch, C channels, M classes, h x w map cells, H x W input pixels, L words.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refexp.models.text_objseg import ExpressionEncoder, TextObjSeg

# Probabilities are clamped this far from 0 and 1 before a log (the fused output is a probability).
EPS = 1e-6


class CategoryFcn(nn.Module):
    """Semantic segmentation over M classes and background (index 0) on an image net's map:
    images (B, 3, H, W) or the fixed body's maps -> logits (B, M + 1, h, w)."""

    def __init__(self, image_net: nn.Module, n_classes: int, hidden: int):
        super().__init__()
        self.image_net, self.n_classes = image_net, n_classes
        for p in image_net.conv_body().parameters():  # the fixed conv body (shared with the LSTM-CNN)
            p.requires_grad_(False)
        self.classify = nn.Sequential(nn.Conv2d(image_net.dim, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(hidden, n_classes + 1, 1))

    @property
    def stride(self) -> int:
        return self.image_net.stride

    def train(self, mode: bool = True) -> "CategoryFcn":
        super().train(mode)
        self.image_net.conv_body().eval()
        return self

    def forward(self, images: torch.Tensor | None, body_maps: torch.Tensor | None = None) -> torch.Tensor:
        fmap = self.image_net.head(body_maps) if body_maps is not None else self.image_net(images)  # (B, Dim, h, w)
        return self.classify(F.relu(fmap))  # (B, M + 1, h, w)

    def probabilities(self, images: torch.Tensor | None, size: tuple[int, int],
                      body_maps: torch.Tensor | None = None) -> torch.Tensor:
        """p_image at each input pixel: the logits bilinearly upsampled, then a softmax: (B, M + 1, H, W)."""
        logits = F.interpolate(self(images, body_maps), size=size, mode="bilinear", align_corners=False)
        return logits.softmax(1)


class ExpressionClassifier(nn.Module):
    """An expression's class: LSTM over the words, then a two-layer MLP on the final hidden state:
    tokens (B, L), lengths (B,) -> logits (B, M)."""

    def __init__(self, vocab_size: int, embed_dim: int, text_hidden: int, mlp_hidden: int, n_classes: int,
                 embeddings: torch.Tensor | None = None, freeze_embeddings: bool = False):
        super().__init__()
        self.text = ExpressionEncoder(vocab_size, embed_dim, text_hidden, embeddings, freeze_embeddings)
        self.mlp = nn.Sequential(nn.Linear(text_hidden, mlp_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(mlp_hidden, n_classes))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.text(tokens, lengths))  # (B, M)


def category_foreground(p_image: torch.Tensor, p_text: torch.Tensor, image_of: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """Eq. 1: p_image (G, M + 1, H, W) with background first, p_text (B, M) -> (B, H, W), the dot product
    over the M classes at each pixel (background takes no part: no expression is of class background).
    image_of (B,): each expression's image among the G (None: G = B, one each)."""
    objects = p_image[:, 1:] if image_of is None else p_image[image_of, 1:]  # (B, M, H, W)
    return torch.einsum("bmhw,bm->bhw", objects, p_text)


class FusedSegmentation(nn.Module):
    """The full model (Eq. 2): the LSTM-CNN's foreground probability p1 = sigmoid(scores) and the
    category branch's p2, mixed by alpha = sigmoid(alpha_logit) in (0, 1), learned end to end.

    The category branch (FCN and expression classifier) is trained once and shared, so it is fixed
    here: only the LSTM-CNN's trainable parameters and alpha learn. Its tokens are the LSTM-CNN's
    (the two share one fixed-GloVe vocabulary, training.vision_text_only.glove_vocab).
    images (B, 3, H, W) or body_maps, tokens (B, L), lengths (B,) -> p_fg (B, H, W) in [0, 1]."""

    def __init__(self, segmentation: TextObjSeg, category: CategoryFcn, classifier: ExpressionClassifier):
        super().__init__()
        if segmentation.upsample is None:
            raise ValueError("the full model fuses the high-resolution LSTM-CNN (it has no deconvolution)")
        self.segmentation, self.category, self.classifier = segmentation, category, classifier
        for p in (*category.parameters(), *classifier.parameters()):
            p.requires_grad_(False)
        self.alpha_logit = nn.Parameter(torch.zeros(()))  # alpha starts at 1/2

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha_logit)

    @property
    def stride(self) -> int:
        return self.segmentation.stride

    def train(self, mode: bool = True) -> "FusedSegmentation":
        super().train(mode)  # the LSTM-CNN's own train() keeps its fixed body in eval mode
        self.category.eval()
        self.classifier.eval()
        return self

    def branches(self, images: torch.Tensor | None, tokens: torch.Tensor, lengths: torch.Tensor,
                 body_maps: torch.Tensor | None = None, image_of: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(p1, p2), each (B, H, W); image_of (B,) as TextObjSeg's: both image sides run once per image."""
        p1 = torch.sigmoid(self.segmentation(images, tokens, lengths, body_maps, image_of)[:, 0])  # (B, H, W)
        p_image = self.category.probabilities(images, p1.shape[-2:], body_maps)  # (G, M + 1, H, W)
        p_text = self.classifier(tokens, lengths).softmax(1)  # (B, M)
        return p1, category_foreground(p_image, p_text, image_of)

    def forward(self, images: torch.Tensor | None, tokens: torch.Tensor, lengths: torch.Tensor,
                body_maps: torch.Tensor | None = None, image_of: torch.Tensor | None = None) -> torch.Tensor:
        return self.fuse(*self.branches(images, tokens, lengths, body_maps, image_of))  # (B, H, W)

    def fuse(self, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        """Eq. 2 on the branches' (B, H, W) probabilities."""
        alpha = self.alpha
        return alpha * p1 + (1 - alpha) * p2


def weighted_probability_loss(p: torch.Tensor, labels: torch.Tensor, foreground: float, background: float
                              ) -> torch.Tensor:
    """The segmentation paper's weighted logistic loss on a probability instead of a score:
    mean of -alpha_f * y * log p - alpha_b * (1 - y) * log(1 - p)."""
    labels = labels.to(p.dtype)
    p = p.clamp(EPS, 1 - EPS)
    return -(foreground * labels * p.log() + background * (1 - labels) * (1 - p).log()).mean()
