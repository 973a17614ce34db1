"""Attention box regression (paper 003: "Attention models for region prediction", IJCAI-17).

The model regresses the referred box (x, y, w, h) directly, with no proposals:

- text model: word embeddings -> BiLSTM; v_l = tanh(W_fwd fwd_l + W_bwd bwd_l + b) (a single-layer
  perceptron merge), phrase feature v_T = mean_l v_l;
- image model: a CNN feature map V_map = (v_r1 .. v_rN) (VGG16 conv5_3, N = 14 x 14 in the paper);
- image attention: an MLP on each (v_ri, v_T) pair, tanh hidden layers, ReLU output: a_i >= 0
  (the paper switched from softmax to ReLU because softmax would not train);
- text attention: an MLP on each (v_l, image attention map) pair, softmax over the words;
  v'_T = sum_l a_l v_l;
- region prediction: an MLP on (image attention map, v'_T), tanh hidden layers, ReLU output g.

Loss (section 3.6): L = (1 - IoU(t, g)) + lambda1 * 1/2 ||t - g||^2 + lambda2 * 1/2 (S_box - S_att)^2,
with boxes in the network input's pixels and S_box the ground-truth area in feature-map cells.

Ablations are switches of `AttentionRegressionModelConfig` (params entries, never copies):
`text_attention: false` (v'_T = v_T), `image_attention: false` (the region MLP reads the feature
map, each cell reduced to 8 channels, instead of the attention map; no penalty term then),
`lambda_penalty: 0`, and
`use_image: false` (text only: the image-free variant, box in normalised image coordinates).

Two switches that are NOT in the paper (both false = the paper's model), added while trying to make
the embedded default use the image: `coord_channels` appends CoordConv-style (x, y) in [-1, 1] to each
cell's features before the attention MLP (so "left"/"top" can be read from a cell, not only from its
content), and `attention_geometry` feeds the attention map's centroid and spread (normalised image
coordinates) to the region MLP and regresses the box centre as centroid + offset (the attended feature
map alone keeps no direct handle on WHERE the attention is).

"Layers" of each MLP in the paper's Table 1 are read as the number of tanh hidden layers: the text
attention has 1 and its hidden size (500) would be meaningless with 0 hidden layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from refexp.config import AttentionRegressionModelConfig

# Keeps 1 - IoU differentiable when both boxes are empty.
_IOU_EPS = 1e-6
# Channels per feature-map cell that the -IA ablation's region MLP reads (see __init__).
NO_ATTENTION_CELL_CHANNELS = 8


@dataclass
class RegressionOutput:
    box: torch.Tensor  # (B, 4) x, y, w, h in the network input's pixels
    image_attention: torch.Tensor | None  # (B, N) ReLU weights over feature-map cells, or None
    text_attention: torch.Tensor | None  # (B, L) softmax weights over words (0 at padding), or None


def _more_tanh_layers(hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """Hidden layers 2..`layers` of an MLP whose first (two-input) layer the caller applies."""
    blocks: list[nn.Module] = []
    for _ in range(layers - 1):
        blocks += [nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Tanh()]
    return nn.Sequential(*blocks)


class TextEncoder(nn.Module):
    """Embeddings -> BiLSTM -> perceptron merge of both directions; word and phrase features."""

    def __init__(self, vocab_size: int, cfg: AttentionRegressionModelConfig,
                 embeddings: torch.Tensor | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        if embeddings is not None:
            if embeddings.shape != (vocab_size, cfg.embedding_dim):
                raise ValueError(f"embeddings shape {tuple(embeddings.shape)} != ({vocab_size}, {cfg.embedding_dim})")
            with torch.no_grad():
                self.embed.weight.copy_(embeddings)
        self.lstm = nn.LSTM(cfg.embedding_dim, cfg.lstm_hidden, num_layers=cfg.lstm_layers,
                            batch_first=True, bidirectional=True)
        self.merge = nn.Linear(2 * cfg.lstm_hidden, cfg.lstm_hidden)  # [W_fwd W_bwd], b_bi
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tokens: (B, L) ids, 0 = <pad>; lengths: (B,) >= 1
        u = self.dropout(self.embed(tokens))  # (B, L, E)
        packed = pack_padded_sequence(u, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])  # (B, L, 2H)
        words = torch.tanh(self.merge(out))  # (B, L, H) v_l
        mask = _length_mask(lengths, tokens.shape[1]).unsqueeze(-1)  # (B, L, 1)
        words = words * mask
        phrase = words.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(words.dtype)  # (B, H) v_T
        return words, phrase


def _length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L) bool


class AttentionRegression(nn.Module):
    """Paper 003's model. `backbone` maps (B, 3, S, S) images to (B, C, h, w) feature maps."""

    def __init__(self, cfg: AttentionRegressionModelConfig, vocab_size: int, *, image_size: int,
                 backbone: nn.Module | None = None, feature_channels: int = 0, freeze_backbone: bool = False,
                 embeddings: torch.Tensor | None = None, init_box: tuple[float, float, float, float] | None = None
                 ) -> None:
        super().__init__()
        if cfg.use_image and (backbone is None or feature_channels <= 0):
            raise ValueError("use_image needs a backbone and its feature_channels")
        self.cfg = cfg
        self.image_size = image_size
        self.grid = cfg.feature_grid
        n_cells = self.grid * self.grid
        hid = cfg.lstm_hidden
        self.text = TextEncoder(vocab_size, cfg, embeddings)
        self.backbone = backbone if cfg.use_image else None
        self.freeze_backbone = freeze_backbone
        if self.backbone is not None and freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        # Pools any backbone's map to the configured grid (identity for VGG16 conv5_3 at 224 px).
        self.pool = nn.AdaptiveAvgPool2d(self.grid)
        # Per-channel standardisation of a frozen backbone's features (see `calibrate`); identity
        # until calibrated. Buffers, so checkpoints carry them to evaluation.
        self.register_buffer("feature_mean", torch.zeros(1, max(feature_channels, 1), 1, 1))
        self.register_buffer("feature_std", torch.ones(1, max(feature_channels, 1), 1, 1))
        # CoordConv-style (x, y) channels in [-1, 1] appended to every cell (our addition, see the
        # module docstring): the attention MLP then knows WHERE a cell is, which "left"/"top" need.
        n_coord = 2 if cfg.coord_channels else 0
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, self.grid), torch.linspace(-1, 1, self.grid), indexing="ij")
        self.register_buffer("cell_coords", torch.stack([xs, ys], -1).reshape(1, n_cells, 2)[..., :n_coord],
                             persistent=False)  # (1, N, 0 or 2)
        region_channels = feature_channels + n_coord
        if cfg.use_image and cfg.image_attention:
            # h_vi = tanh(W_vr v_ri + W_vt v_T + b_v), then more tanh layers, a_i = relu(W_vh h + b_vh)
            self.img_att_region = nn.Linear(region_channels, cfg.image_attention_hidden)
            self.img_att_text = nn.Linear(hid, cfg.image_attention_hidden, bias=False)
            self.img_att_hidden = _more_tanh_layers(cfg.image_attention_hidden, cfg.image_attention_layers, cfg.dropout)
            self.img_att_out = nn.Linear(cfg.image_attention_hidden, 1)
            image_in = n_cells
        elif cfg.use_image:
            # -IA: the region MLP reads the whole feature map instead of the attention map. A shared
            # per-cell linear layer first reduces each cell to a few channels: with the flattened
            # C x N map (8,192 inputs on the embedded default, 100k for VGG16) Adam's first steps
            # saturate the tanh layer and the variant does not train.
            self.cell_reduce = nn.Linear(region_channels, NO_ATTENTION_CELL_CHANNELS)
            image_in = n_cells * NO_ATTENTION_CELL_CHANNELS
        else:
            image_in = 0
        if cfg.text_attention:
            # h_tl = tanh(W_tw v_l + W_ta v^I_a + b_t), a_l = softmax_l(W_th h_tl + b_th)
            self.txt_att_word = nn.Linear(hid, cfg.text_attention_hidden)
            self.txt_att_map = nn.Linear(n_cells, cfg.text_attention_hidden, bias=False)
            self.txt_att_hidden = _more_tanh_layers(cfg.text_attention_hidden, cfg.text_attention_layers, cfg.dropout)
            self.txt_att_out = nn.Linear(cfg.text_attention_hidden, 1)
        # h_p = tanh(W_pv v^I_a + W_pt v'_T + b_ph), more tanh layers, g = relu(W_p h_p + b_p)
        self.reg_image = nn.Linear(image_in, cfg.region_hidden, bias=False) if image_in else None
        # Our addition (attention_geometry): the attention map's centroid and spread in normalised
        # image coordinates, (B, 4), as extra region-MLP inputs, and the box centre predicted as
        # centroid + offset: a direct path from WHERE the attention is to the box.
        self.use_geometry = bool(cfg.use_image and cfg.image_attention and cfg.attention_geometry)
        self.reg_geometry = nn.Linear(4, cfg.region_hidden, bias=False) if self.use_geometry else None
        ys, xs = torch.meshgrid((torch.arange(self.grid) + 0.5) / self.grid,
                                (torch.arange(self.grid) + 0.5) / self.grid, indexing="ij")
        self.register_buffer("cell_centres", torch.stack([xs, ys], -1).reshape(n_cells, 2), persistent=False)  # (N, 2)
        self.reg_text = nn.Linear(hid, cfg.region_hidden)
        self.reg_hidden = _more_tanh_layers(cfg.region_hidden, cfg.region_layers, cfg.dropout)
        self.reg_out = nn.Linear(cfg.region_hidden, 4)
        self.dropout = nn.Dropout(cfg.dropout)
        self._init_outputs(init_box or (0.25, 0.25, 0.5, 0.5))

    def _init_outputs(self, init_box: tuple[float, float, float, float]) -> None:
        # Start at the mean training box (normalised) so the ReLU outputs are alive, and the image
        # attention at the mean box area per cell, so S_att starts near S_box.
        with torch.no_grad():
            self.reg_out.weight.mul_(0.1)
            self.reg_out.bias.copy_(torch.tensor(init_box, dtype=torch.float32))
            if self.use_geometry:  # x, y outputs are offsets from the attention centroid
                self.reg_out.bias[:2].zero_()
            if hasattr(self, "img_att_out"):
                self.img_att_out.weight.mul_(0.1)
                self.img_att_out.bias.fill_(max(init_box[2] * init_box[3], 0.05))

    def train(self, mode: bool = True) -> "AttentionRegression":
        super().train(mode)
        if self.backbone is not None and self.freeze_backbone:
            self.backbone.eval()  # frozen means frozen batch-norm statistics too
        return self

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen-backbone feature maps (B, C, h, w), computed once per image and cached by callers."""
        if self.backbone is None or not self.freeze_backbone:
            raise ValueError("image features are cacheable only for a frozen backbone")
        self.backbone.eval()
        return self.pool(self.backbone(images))  # (B, C, grid, grid)

    @torch.no_grad()
    def calibrate(self, features: torch.Tensor) -> None:
        """Standardise each channel of a frozen backbone's maps with statistics of the training
        images' maps: a frozen, randomly initialised CNN (no ImageNet weights offline) emits features
        of std ~0.03, too small for the attention MLP to read; pretrained VGG16 ones are not."""
        self.feature_mean.copy_(features.mean(dim=(0, 2, 3), keepdim=True))
        self.feature_std.copy_(features.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6))

    def forward(self, images: torch.Tensor | None, tokens: torch.Tensor, lengths: torch.Tensor,
                features: torch.Tensor | None = None) -> RegressionOutput:
        # images: (B, 3, S, S), or features: (B, C, h, w) cached from a frozen backbone, or neither
        # when use_image is false; tokens: (B, L); lengths: (B,)
        words, phrase = self.text(tokens, lengths)  # (B, L, H), (B, H)
        image_attention = None
        image_input = None
        if self.backbone is not None:
            if features is not None:
                fmap = features
            elif images is None:
                raise ValueError("this variant reads images but the batch has none")
            else:
                with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
                    fmap = self.backbone(images)  # (B, C, h, w)
            if fmap.shape[-2:] != (self.grid, self.grid):
                fmap = self.pool(fmap)  # (B, C, grid, grid)
            fmap = (fmap - self.feature_mean) / self.feature_std
            regions = fmap.flatten(2).transpose(1, 2)  # (B, N, C) v_ri
            regions = torch.cat([regions, self.cell_coords.expand(len(regions), -1, -1)], -1)  # (B, N, C + 2)
            if self.cfg.image_attention:
                h = torch.tanh(self.img_att_region(regions)
                               + self.img_att_text(phrase).unsqueeze(1))  # (B, N, Hi)
                h = self.img_att_hidden(h)
                image_attention = torch.relu(self.img_att_out(self.dropout(h))).squeeze(-1)  # (B, N)
                image_input = image_attention
            else:
                image_input = torch.tanh(self.cell_reduce(regions)).flatten(1)  # (B, N * 8)
        text_attention = None
        if self.cfg.text_attention:
            h = torch.tanh(self.txt_att_word(self.dropout(words))
                           + self.txt_att_map(image_attention).unsqueeze(1))  # (B, L, Ht)
            h = self.txt_att_hidden(h)
            logits = self.txt_att_out(self.dropout(h)).squeeze(-1)  # (B, L)
            logits = logits.masked_fill(~_length_mask(lengths, tokens.shape[1]), float("-inf"))
            text_attention = torch.softmax(logits, dim=1)  # (B, L)
            phrase = (text_attention.unsqueeze(-1) * words).sum(1)  # (B, H) v'_T
        h = self.reg_text(self.dropout(phrase))
        if self.reg_image is not None:
            h = h + self.reg_image(self.dropout(image_input))
        centre = None
        if self.use_geometry:
            weights = image_attention / (image_attention.sum(1, keepdim=True) + _IOU_EPS)  # (B, N)
            centre = weights @ self.cell_centres  # (B, 2) attention centroid, normalised x, y
            spread = (weights @ self.cell_centres ** 2 - centre ** 2).clamp(min=0).add(1e-6).sqrt()  # (B, 2)
            h = h + self.reg_geometry(torch.cat([centre, spread], 1))
        h = self.reg_hidden(torch.tanh(h))  # (B, Hr)
        # The last layer works in normalised units and is scaled to input pixels: the same g, but
        # Adam's step size then suits every image size.
        raw = self.reg_out(self.dropout(h))  # (B, 4) normalised x, y, w, h (or centre offset, w, h)
        if centre is not None:
            # x = centroid_x + offset_x - w / 2 (likewise y): the offsets start near 0 (see _init_outputs).
            wh = raw[:, 2:]
            raw = torch.cat([centre + raw[:, :2] - 0.5 * wh, wh], 1)
        box = self.image_size * torch.relu(raw)  # (B, 4) x, y, w, h
        return RegressionOutput(box, image_attention, text_attention)


def xywh_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of continuous (x, y, w, h) boxes, (B, 4) each -> (B,). Differentiable."""
    px2, py2 = pred[:, 0] + pred[:, 2], pred[:, 1] + pred[:, 3]
    tx2, ty2 = target[:, 0] + target[:, 2], target[:, 1] + target[:, 3]
    iw = (torch.minimum(px2, tx2) - torch.maximum(pred[:, 0], target[:, 0])).clamp(min=0)
    ih = (torch.minimum(py2, ty2) - torch.maximum(pred[:, 1], target[:, 1])).clamp(min=0)
    inter = iw * ih
    union = pred[:, 2] * pred[:, 3] + target[:, 2] * target[:, 3] - inter
    return inter / (union + _IOU_EPS)


def regression_loss(out: RegressionOutput, target: torch.Tensor, target_cells: torch.Tensor,
                    lambda_squared_error: float, lambda_penalty: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L = (1 - IoU) + l1 * 1/2 ||t - g||^2 + l2 * 1/2 (S_box - S_att)^2, batch mean.

    target: (B, 4) x, y, w, h in input pixels; target_cells: (B,) ground-truth area in feature-map cells.
    """
    iou_loss = 1.0 - xywh_iou(out.box, target)  # (B,)
    squared_error = 0.5 * ((target - out.box) ** 2).sum(1)  # (B,)
    loss = iou_loss + lambda_squared_error * squared_error
    penalty = torch.zeros_like(iou_loss)
    if out.image_attention is not None:
        penalty = 0.5 * (target_cells - out.image_attention.sum(1)) ** 2  # (B,)
        loss = loss + lambda_penalty * penalty
    loss = loss.mean()
    extras = {"loss/iou": float(iou_loss.detach().mean()),
              "loss/squared_error": float(squared_error.detach().mean()),
              "loss/attention_area": float(penalty.detach().mean())}
    if out.image_attention is not None:
        # A ReLU cell at 0 gets no gradient: a map that dies during training stays dead, so the curve tracks it.
        extras["attention/alive_cells"] = float((out.image_attention.detach() > 0).float().mean())
    return loss, extras
