"""SCRC, the Spatial Context Recurrent ConvNet (Hu et al., "Natural Language Object Retrieval").

Three LSTMs, named as in the paper (Sec. 3.1, Fig. 2):
- LSTM_language reads the embedded words E w_t;
- LSTM_local reads [h_language^(t), x_box, x_spatial], x_box = CNN_local(I_box), x_spatial the 8-d
  box geometry of Eq. 1;
- LSTM_global reads [h_language^(t), x_context], x_context = CNN_global(I_im).
Word prediction (Eq. 2): p(w_{t+1} | ...) = Softmax(W_local h_local + W_global h_global + r).
A box's score is the expression's log-likelihood (Eq. 7, the log of the product over words,
<eos> included as in LRCN); `score` also returns lengths for the length-normalised alternative.

Configurations (flags):
- captioner (LRCN, pretraining): use_local=False, i.e. W_local = 0; only language + global parts
  exist.
- full SCRC: use_local, use_box, use_spatial, use_context.
- "w/o context": use_context=False (W_global = 0, the global LSTM and CNN_global are dropped).
- "w/o context, spatial": additionally use_spatial=False (x_spatial = 0).
- image-free: use_box=False, use_context=False: LSTM_local reads [h_language, x_spatial] only.
`transfer_from_captioner` implements Sec. 3.2: language parts copied; LSTM_global's weights
(Eqs. 3-6) copied into LSTM_local with zero weights on the 8 x_spatial inputs; W_global copied
into W_local; CNN_global copied into CNN_local. The paper's captioner keeps ImageNet VGG-16 frozen
(LRCN's "freeze-convnet"), so there both CNNs start from ImageNet; ours trains its CNN, and copying it
keeps the LRCN-as-retriever baseline exact: with use_context=False and before any fine-tuning the
transferred model scores a box exactly as the captioner scores the box crop. Without transfer both
CNNs start from the backbone's pretrained weights (ImageNet, or the pretrain_backbone checkpoint for
`tiny`), as the paper's "w/o transfer" row does.

x_box/x_context (`image_feature`): VGG-16's fc8 output, 1000-d, fed as is (the paper), or a linear
projection of the backbone's pooled feature map to feature_dim (any backbone; the embedded `tiny`).
`cached_features=True` (scrc.frozen_backbone) keeps the backbone frozen: the descriptors come from the
feature cache (refexp.training.features), and only the projections, LSTMs and word layers train.
"""
from __future__ import annotations

import torch
from torch import nn

from refexp.models.layers import ImageEncoder, crop_and_resize, sequence_log_likelihood

SPATIAL_DIM = 8


class Scrc(nn.Module):
    def __init__(self, vocab_size: int, *, embed_dim: int = 64, hidden: int = 128, feature_dim: int = 128,
                 backbone: str = "tiny", pretrained: bool = False, crop_size: int = 32, dropout: float = 0.0,
                 use_local: bool = True, use_box: bool = True, use_spatial: bool = True, use_context: bool = True,
                 pad_id: int = 0, cached_features: bool = False, backbone_weights: str | None = None,
                 image_feature: str = "pooled"):
        super().__init__()
        if not (use_local or use_context):
            raise ValueError("SCRC needs the local or the global branch (W_local and W_global cannot both be 0)")
        if use_box and not use_local:
            use_box = False  # the captioner never looks at the box
        self.use_local, self.use_box, self.use_spatial, self.use_context = use_local, use_box, use_spatial, use_context
        self.crop_size, self.pad_id, self.hidden = crop_size, pad_id, hidden
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm_language = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.r = nn.Parameter(torch.zeros(vocab_size))  # the shared bias of Eq. 2
        if use_local:
            if use_box:
                self.cnn_local = ImageEncoder(backbone, pretrained, feature_dim, cached=cached_features,
                                              weights_file=backbone_weights, feature=image_feature)
            self.lstm_local = nn.LSTM(hidden + (feature_dim if use_box else 0) + SPATIAL_DIM, hidden, batch_first=True)
            self.w_local = nn.Linear(hidden, vocab_size, bias=False)
        if use_context:
            self.cnn_global = ImageEncoder(backbone, pretrained, feature_dim, cached=cached_features,
                                              weights_file=backbone_weights, feature=image_feature)
            self.lstm_global = nn.LSTM(hidden + feature_dim, hidden, batch_first=True)
            self.w_global = nn.Linear(hidden, vocab_size, bias=False)

    # -- image features -------------------------------------------------------------------

    def box_features(self, images: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """images (N, 3, S, S) uint8, boxes (K, 4) continuous store coords -> x_box (K, F)."""
        return self.cnn_local(crop_and_resize(images, boxes, self.crop_size, image_index))

    def context_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, S, S) uint8 -> x_context (N, F): the whole image through the same crop path."""
        s = images.shape[-1]
        full = torch.tensor([[0.0, 0.0, float(s), float(images.shape[-2])]], device=images.device).expand(len(images), 4)
        return self.cnn_global(crop_and_resize(images, full, self.crop_size))

    # -- sequence model -------------------------------------------------------------------

    def _local_logits(self, h_lang: torch.Tensor, x_box: torch.Tensor | None, spatial: torch.Tensor) -> torch.Tensor:
        """h_lang (B, T, H), x_box (B, F) or None, spatial (B, 8) -> W_local h_local (B, T, V)."""
        t = h_lang.shape[1]
        if not self.use_spatial:
            spatial = torch.zeros_like(spatial)  # the paper's "setting x_spatial to 0"
        parts = [h_lang]
        if self.use_box:
            parts.append(x_box.unsqueeze(1).expand(-1, t, -1))
        parts.append(spatial.unsqueeze(1).expand(-1, t, -1))
        h_local, _ = self.lstm_local(torch.cat(parts, dim=-1))  # (B, T, H)
        return self.w_local(self.dropout(h_local))

    def _global_logits(self, h_lang: torch.Tensor, x_context: torch.Tensor) -> torch.Tensor:
        """h_lang (B, T, H), x_context (B, F) -> W_global h_global (B, T, V)."""
        h_global, _ = self.lstm_global(torch.cat([h_lang, x_context.unsqueeze(1).expand(-1, h_lang.shape[1], -1)], dim=-1))
        return self.w_global(self.dropout(h_global))

    def _language(self, inputs: torch.Tensor) -> torch.Tensor:
        h_lang, _ = self.lstm_language(self.dropout(self.embed(inputs)))  # (B, T, H)
        return h_lang

    def forward(self, batch: dict) -> torch.Tensor:
        """batch: inputs (B, T), spatial (B, 8), and either image (B, 3, S, S) uint8 + box (B, 4), or the
        same crops already cut, box_crop / context_crop (B, 3, c, c) in [0, 1], or a frozen backbone's
        cached pooled features box_pooled / context_pooled (B, C) -> logits (B, T, V)."""
        h_lang = self._language(batch["inputs"])
        logits = self.r.expand(*h_lang.shape[:2], -1)
        if self.use_local:
            x_box = None
            if self.use_box:
                if "box_pooled" in batch:
                    x_box = self.cnn_local.proj(batch["box_pooled"])
                elif "box_crop" in batch:  # cut once by the dataset (refexp.training.scrc.PrecutCrops)
                    x_box = self.cnn_local(batch["box_crop"])
                else:
                    x_box = self.box_features(batch["image"], batch["box"])
            logits = logits + self._local_logits(h_lang, x_box, batch["spatial"])
        if self.use_context:
            if "context_pooled" in batch:
                x_context = self.cnn_global.proj(batch["context_pooled"])
            elif "context_crop" in batch:
                x_context = self.cnn_global(batch["context_crop"])
            else:
                x_context = self.context_features(batch["image"])
            logits = logits + self._global_logits(h_lang, x_context)
        return logits

    def log_likelihood(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of log p(S | box, image, x_spatial) (B,), number of predicted tokens (B,))."""
        return sequence_log_likelihood(self(batch), batch["targets"], self.pad_id)

    @torch.no_grad()
    def score(self, image: torch.Tensor | None, boxes: torch.Tensor, spatial: torch.Tensor,
              inputs: torch.Tensor, targets: torch.Tensor, chunk: int = 4096,
              box_pooled: torch.Tensor | None = None, context_pooled: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every (query, candidate) pair of one image.

        image (1, 3, S, S) uint8 or None (image-free), boxes (K, 4) continuous store coords,
        spatial (K, 8), inputs/targets (Q, T) -> (log-likelihood (Q, K), lengths (Q,)).
        The language and global parts run once per query, CNN_local once per candidate.
        With a frozen backbone, box_pooled (K, C) / context_pooled (1, C) replace the pixels."""
        q, k = inputs.shape[0], spatial.shape[0]
        h_lang = self._language(inputs)  # (Q, T, H)
        base = self.r.expand(*h_lang.shape[:2], -1)  # (Q, T, V)
        if self.use_context:
            x_context = self.cnn_global.proj(context_pooled) if context_pooled is not None else self.context_features(image)
            base = base + self._global_logits(h_lang, x_context.expand(q, -1))
        mask = targets != self.pad_id  # (Q, T)
        if not self.use_local:  # the captioner: the same score for every box
            ll, n = sequence_log_likelihood(base, targets, self.pad_id)
            return ll[:, None].expand(q, k).clone(), n
        x_box = None
        if self.use_box:
            x_box = (self.cnn_local.proj(box_pooled) if box_pooled is not None
                     else self.box_features(image, boxes, torch.zeros(k, dtype=torch.long, device=boxes.device)))
        if not self.use_spatial:
            spatial = torch.zeros_like(spatial)
        # LSTM_local's input projection splits into a per-query part (h_language) and a
        # per-candidate part (x_box, x_spatial), each computed once; only the recurrence runs per pair.
        lstm = self.lstm_local
        h = self.hidden
        w_ih = lstm.weight_ih_l0  # (4H, H [+ F] + 8)
        per_query = h_lang @ w_ih[:, :h].T  # (Q, T, 4H)
        box_in = torch.cat(([x_box] if x_box is not None else []) + [spatial], dim=1)  # (K, [F +] 8)
        per_box = box_in @ w_ih[:, h:].T + lstm.bias_ih_l0 + lstm.bias_hh_l0  # (K, 4H)
        out = torch.empty(q, k, device=spatial.device)
        step = max(1, chunk // k)  # queries per chunk
        for start in range(0, q, step):
            qs = slice(start, start + step)
            h_local = _pair_recurrence(per_query[qs], per_box, lstm.weight_hh_l0)  # (q', K, T, H)
            logits = base[qs].unsqueeze(1) + self.w_local(h_local)  # (q', K, T, V)
            logp = torch.log_softmax(logits.float(), dim=-1)
            tgt = targets[qs].unsqueeze(1).expand(-1, k, -1)  # (q', K, T)
            token_ll = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (q', K, T)
            out[qs] = (token_ll * mask[qs].unsqueeze(1)).sum(dim=-1)
        return out, mask.sum(dim=1)


def _pair_recurrence(per_query: torch.Tensor, per_box: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """nn.LSTM's recurrence (gate order i, f, g, o; zero initial state) for every (query, box)
    pair, given the input part of the gates split into per-query (Q, T, 4H) and per-box (K, 4H)
    terms (biases included in per_box) -> h (Q, K, T, H)."""
    q, t, four_h = per_query.shape
    h = per_query.new_zeros(q, per_box.shape[0], four_h // 4)
    c = torch.zeros_like(h)
    outs = []
    for step in range(t):
        gates = per_query[:, step].unsqueeze(1) + per_box.unsqueeze(0) + h @ w_hh.T  # (Q, K, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=2)


def _copy_lstm(dst: nn.LSTM, src: nn.LSTM, extra_zero_inputs: int) -> None:
    """Copy Eqs. 3-6 weights from src into dst whose input has `extra_zero_inputs` more columns
    at the end (x_spatial); those columns start at zero so the copy computes the same gates."""
    with torch.no_grad():
        w = src.weight_ih_l0
        if dst.weight_ih_l0.shape[1] != w.shape[1] + extra_zero_inputs:
            raise ValueError(f"cannot copy LSTM with input {w.shape[1]} into input {dst.weight_ih_l0.shape[1]}")
        dst.weight_ih_l0.zero_()
        dst.weight_ih_l0[:, : w.shape[1]].copy_(w)
        dst.weight_hh_l0.copy_(src.weight_hh_l0)
        dst.bias_ih_l0.copy_(src.bias_ih_l0)
        dst.bias_hh_l0.copy_(src.bias_hh_l0)


def transfer_from_captioner(model: Scrc, captioner: Scrc) -> None:
    """Sec. 3.2: initialise `model` from a caption-pretrained LRCN (`captioner`, W_local = 0)."""
    if captioner.use_local or not captioner.use_context:
        raise ValueError("the transfer source must be a captioner (use_local=False, use_context=True)")
    if model.use_local and not model.use_box:
        raise ValueError("the image-free SCRC has no image features to transfer into")
    with torch.no_grad():
        model.embed.load_state_dict(captioner.embed.state_dict())
        model.lstm_language.load_state_dict(captioner.lstm_language.state_dict())
        model.r.copy_(captioner.r)
        if model.use_context:
            model.cnn_global.load_state_dict(captioner.cnn_global.state_dict())
            model.lstm_global.load_state_dict(captioner.lstm_global.state_dict())
            model.w_global.load_state_dict(captioner.w_global.state_dict())
        if model.use_local:
            model.cnn_local.load_state_dict(captioner.cnn_global.state_dict())
            _copy_lstm(model.lstm_local, captioner.lstm_global, SPATIAL_DIM)
            model.w_local.weight.copy_(captioner.w_global.weight)
