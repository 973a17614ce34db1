"""Expressional region retrieval (Guo, Li, Jiang, ACM MM 2020): the Gated Residual Network (Sec. 3) and
the paper's three baselines (Sec. 4.2, "Baseline Model"), as retrieval models over cached region maps.

Inputs everywhere: region maps X (B, C, k, k) (the roi_align'ed map of the frozen backbone over a region,
cached upstream), token ids (B, T) long with 0 = <pad>, lengths (B,) >= 1. A region is always modulated by
ONE expression, its query's: "the query text simultaneously controls the visual features of query region
and candidate regions" (Sec. 3.4), so the query region and every candidate are embedded under the query's
words, and a candidate's representation differs from query to query.

- language (Sec. 3.1), over an `nn.Embedding` initialised from the given word vectors and trained:
  - `LstmEncoder`: the LSTM's hidden state after the last word, L (B, text_hidden);
  - `SelfAttentionEncoder` (Fig. 4): the context is the mean of the words' embeddings; each word's
    embedding concatenated with the context -> one FC layer -> a score per word, softmax over the words;
    L = the score-weighted sum of the embeddings (B, embed_dim);
- `GatedResidual` (Sec. 3.2): Y = w_g Y_g + w_r Y_r (Eq. 5, w_g = w_r = 1 at the start, trained), with
  Y_g = sigmoid(W_g2 * ReLU(W_g1 * [X, L])) (.) X (Eq. 1; 3x3 convolutions, padding 1, L tiled over the
  k x k map) and the residual Y_r: none (Y = w_g Y_g), "visual" Y_r = X (Eq. 3), or "compose"
  Y_r = W_r2 * ReLU(W_r1 * [X, L]) (Eq. 4). With feature "fc" X is pooled to W = H = 1 (its mean over the
  k x k map) and the four convolutions become linear maps (end of Sec. 3.2).
- baselines (Table 2), on the POOLED region vector (the mean of the k x k map): the paper extracts the
  "last fully connected layer" features for them; ResNet-18 without its classifier ends in exactly this
  average pool, so the pooled map is that layer's input vector:
  - `visual_feature` (a): the pooled vector itself, no text, nothing trainable;
  - `vl_lstm` (b): an LSTM (state fc_dim) fed a linear projection of the pooled vector to embed_dim first
    (as Show and Tell feeds its image), then the words; its hidden state after the last word;
  - `concat_fc` (c): [pooled X, L] -> one FC layer to fc_dim (the paper names no activation: none).
Every representation is flattened and L2-normalised, so a dot product is the cosine of Sec. 3.3.

Ranking a corpus exactly, fast (`prepare_corpus` + `score`): what does not depend on the query is computed
once per corpus. The first layer of the gate and of Compose is linear in [X, L]:
W_1 * [X, L] + b = (W_1x * X + b) + W_1l * tile(L). The first term is cached per candidate; the second is
the tiled L convolved with zero padding (a constant map except at the border), computed once per query by
the same convolution, so the sum is exactly what the full convolution computes. Only the second layers
run per (query, candidate). concat_fc splits its FC the same way; vl_lstm caches the LSTM's state after
the visual step (its first input; the state starts at zero, so that state depends on the candidate only)
and runs the words over all candidates at once; visual_feature is one matrix product. `score_plain` is
the reference: `embed` of each candidate alone, in a Python loop (equal, tests).

Tensor shapes: B batch, C channels, k map size, T words, E embed_dim, D the text vector's size,
H gate_hidden, N corpus candidates, Q queries, R representation size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from refexp.config import GrnModelConfig


def retrieval_loss(query_emb: torch.Tensor, candidate_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 6 made well defined: the softmax cross-entropy over cosine / temperature, the positive at index 0.

    query_emb (B, R), candidate_emb (B, 1 + n, R) -> scalar mean over the batch of
    -log(exp(s_0 / t) / sum_j exp(s_j / t)), s_j the cosine of the query and candidate j.

    Eq. 6 as printed takes the log of a ratio of raw cosines, Sim(phi, phi+) / sum_j Sim(phi, phi_j-),
    undefined (or of the wrong sign) as soon as a similarity is negative, and its denominator omits the
    positive. The softmax over cosines / temperature is the well-defined loss of the same shape (the
    "soft triplet loss" the paper names for N = 2 is its two-candidate case).
    """
    query = F.normalize(query_emb, dim=-1)  # (B, R); a no-op on embed's unit vectors
    candidates = F.normalize(candidate_emb, dim=-1)  # (B, 1 + n, R)
    logits = torch.einsum("br,bnr->bn", query, candidates) / temperature  # (B, 1 + n)
    positive = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, positive)


def pooled(regions: torch.Tensor) -> torch.Tensor:
    """(B, C, k, k) -> (B, C): the mean over the map (the "fc" feature, the baselines' visual vector)."""
    return regions.mean(dim=(2, 3))


def valid_words(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True at the first `length` positions."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def word_embedding(embeddings: torch.Tensor, embed_dim: int) -> nn.Embedding:
    """A trainable nn.Embedding (row 0 = <pad>) starting from a copy of the (V, E) word vectors."""
    if embeddings.dim() != 2 or embeddings.shape[1] != embed_dim:
        raise ValueError(f"embeddings must be (vocabulary, {embed_dim}), got {tuple(embeddings.shape)}")
    embed = nn.Embedding(embeddings.shape[0], embed_dim, padding_idx=0)
    with torch.no_grad():
        embed.weight.copy_(embeddings)
    return embed


class LstmEncoder(nn.Module):
    """(B, T) ids, (B,) lengths -> L (B, hidden): the LSTM's hidden state after each expression's last word."""

    def __init__(self, embeddings: torch.Tensor, embed_dim: int, hidden: int):
        super().__init__()
        self.embed = word_embedding(embeddings, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.dim = hidden

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))  # (B, T, hidden)
        # A unidirectional LSTM's state at position length - 1 never sees the pads after it.
        last = (lengths.to(out.device) - 1).clamp(min=0)
        return out[torch.arange(len(out), device=out.device), last]  # (B, hidden)


class SelfAttentionEncoder(nn.Module):
    """Fig. 4: (B, T) ids, (B,) lengths -> L (B, E), the context-weighted sum of the word embeddings."""

    def __init__(self, embeddings: torch.Tensor, embed_dim: int):
        super().__init__()
        self.embed = word_embedding(embeddings, embed_dim)
        self.score = nn.Linear(2 * embed_dim, 1)  # [word, context] -> the word's score
        self.dim = embed_dim

    def weights(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (softmax weights (B, T), 0 at padding; word embeddings (B, T, E))."""
        words = self.embed(tokens)  # (B, T, E)
        valid = valid_words(lengths.to(words.device), tokens.shape[1])  # (B, T)
        count = valid.sum(1, keepdim=True).clamp(min=1).to(words.dtype)  # (B, 1)
        context = (words * valid[..., None]).sum(1) / count  # (B, E): the mean of the valid words
        pairs = torch.cat([words, context[:, None].expand_as(words)], -1)  # (B, T, 2E)
        logits = self.score(pairs)[..., 0].masked_fill(~valid, float("-inf"))  # (B, T)
        return torch.softmax(logits, dim=1), words

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        weights, words = self.weights(tokens, lengths)  # (B, T), (B, T, E)
        return (weights[..., None] * words).sum(1)  # (B, E)


def build_language(language: str, embeddings: torch.Tensor, cfg: GrnModelConfig) -> nn.Module:
    if language == "lstm":
        return LstmEncoder(embeddings, cfg.embed_dim, cfg.text_hidden)
    if language == "self_attention":
        return SelfAttentionEncoder(embeddings, cfg.embed_dim)
    raise ValueError(f"language must be lstm or self_attention, not {language!r}")


class GatedResidual(nn.Module):
    """Sec. 3.2. feature "conv": X (B, C, k, k), L (B, D) -> Y (B, C, k, k) through 3x3 convolutions
    (padding 1) on [X, tile(L)]; feature "fc": X (B, C) (pooled), L (B, D) -> Y (B, C) through linear maps.
    W_g1 and W_r1 map C + D channels to `hidden`, W_g2 and W_r2 map `hidden` back to C (Y_g and Y_r are
    added, so both have X's shape)."""

    def __init__(self, channels: int, text_dim: int, hidden: int, residual: str = "compose", feature: str = "conv"):
        super().__init__()
        if residual not in ("none", "visual", "compose"):
            raise ValueError(f"residual must be none, visual or compose, not {residual!r}")
        if feature not in ("conv", "fc"):
            raise ValueError(f"feature must be conv or fc, not {feature!r}")
        self.channels, self.text_dim, self.residual, self.feature = channels, text_dim, residual, feature

        def layer(n_in: int, n_out: int) -> nn.Module:
            return nn.Conv2d(n_in, n_out, 3, padding=1) if feature == "conv" else nn.Linear(n_in, n_out)

        self.gate_in, self.gate_out = layer(channels + text_dim, hidden), layer(hidden, channels)  # W_g1, W_g2
        if residual == "compose":
            self.compose_in, self.compose_out = layer(channels + text_dim, hidden), layer(hidden, channels)  # W_r1, W_r2
        self.w_g = nn.Parameter(torch.ones(()))  # Eq. 5, "w_g = 1, w_r = 1 at beginning"
        if residual == "none":
            self.register_parameter("w_r", None)
        else:
            self.w_r = nn.Parameter(torch.ones(()))

    def first_layers(self) -> list[nn.Module]:
        """The layers that read [X, L]: W_g1, and W_r1 with Compose."""
        return [self.gate_in, self.compose_in] if self.residual == "compose" else [self.gate_in]

    def _tile(self, text: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D, k, k) copies over X's map (conv), or (B, D) as is (fc)."""
        return text[:, :, None, None].expand(-1, -1, *x.shape[2:]) if self.feature == "conv" else text

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([x, self._tile(text, x)], 1)  # (B, C + D, k, k) or (B, C + D): [X, L]
        return self.from_first_layers(x, [layer(joint) for layer in self.first_layers()])

    def from_first_layers(self, x: torch.Tensor, first: list[torch.Tensor], inplace: bool = False) -> torch.Tensor:
        """Y from X (B, C, ...) and the first layers' outputs W_1 * [X, L] + b (B, H, ...), gate first.
        inplace (scoring without autograd): the same arithmetic, overwriting `first` and the intermediates
        instead of allocating new maps."""
        if inplace:
            y = self.gate_out(F.relu_(first[0])).sigmoid_().mul_(x).mul_(self.w_g)  # w_g Y_g (Eq. 1)
            if self.residual == "visual":
                y.add_(self.w_r * x)  # Y_r = X (Eq. 3)
            elif self.residual == "compose":
                y.add_(self.compose_out(F.relu_(first[1])).mul_(self.w_r))  # Y_r (Eq. 4)
            return y  # (B, C, ...) (Eq. 5)
        gate = torch.sigmoid(self.gate_out(F.relu(first[0])))  # (B, C, ...) in [0, 1]
        y = self.w_g * gate * x  # w_g Y_g (Eq. 1)
        if self.residual == "visual":
            y = y + self.w_r * x  # Y_r = X (Eq. 3)
        elif self.residual == "compose":
            y = y + self.w_r * self.compose_out(F.relu(first[1]))  # Y_r (Eq. 4)
        return y  # (B, C, ...) (Eq. 5)

    # The fast path's split of each first layer: W_1 * [X, L] + b = (W_1x * X + b) + W_1l * tile(L).

    def visual_terms(self, x: torch.Tensor) -> list[torch.Tensor]:
        """X (N, C, k, k) or (N, C) -> per first layer W_1x * X + b (N, H, ...): independent of the query."""
        c = self.channels
        if self.feature == "conv":
            return [F.conv2d(x, layer.weight[:, :c], layer.bias, padding=1) for layer in self.first_layers()]
        return [F.linear(x, layer.weight[:, :c], layer.bias) for layer in self.first_layers()]

    def text_terms(self, text: torch.Tensor, map_size: int) -> list[torch.Tensor]:
        """L (Q, D) -> per first layer W_1l * tile(L) (Q, H, k, k) or (Q, H): the same for every candidate.
        The tiled L goes through the convolution itself (zero padding), so the border is exact too."""
        c = self.channels
        if self.feature == "conv":
            tiled = text[:, :, None, None].expand(-1, -1, map_size, map_size)  # (Q, D, k, k)
            return [F.conv2d(tiled, layer.weight[:, c:], padding=1) for layer in self.first_layers()]
        return [F.linear(text, layer.weight[:, c:]) for layer in self.first_layers()]


@dataclass
class CorpusCache:
    """The query-independent part of a corpus's representations (`prepare_corpus`), N candidates."""

    size: int
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # each (N, ...), candidate order

    def rows(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        return {name: part[start:stop] for name, part in self.parts.items()}


class RetrievalModel(nn.Module):
    """The shared API. `embed` is the ordinary forward; `prepare_corpus` + `score` rank a corpus exactly
    and fast; `score_plain` is their reference. Subclasses define `embed`, `prepare_corpus`,
    `query_context` (per query, what every candidate shares) and `candidates` (a chunk's embeddings
    under one query's context)."""

    def embed(self, regions: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """regions (B, C, k, k), tokens (B, T), lengths (B,) -> (B, R) unit vectors: each region under its
        paired expression."""
        raise NotImplementedError

    def embed_candidates(self, regions: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """regions (B, M, C, k, k), each row's M regions under that row's expression -> (B, M, R)."""
        b, m = regions.shape[:2]
        out = self.embed(regions.flatten(0, 1), tokens.repeat_interleave(m, 0),
                         lengths.to(tokens.device).repeat_interleave(m, 0))  # (B * M, R)
        return out.view(b, m, -1)

    def retrieval_loss(self, query_emb: torch.Tensor, candidate_emb: torch.Tensor, temperature: float
                       ) -> torch.Tensor:
        """See the module-level `retrieval_loss` (Eq. 6 as a softmax over cosine / temperature)."""
        return retrieval_loss(query_emb, candidate_emb, temperature)

    def prepare_corpus(self, corpus_regions: torch.Tensor) -> CorpusCache:
        """corpus_regions (N, C, k, k) -> the query-independent part of every candidate, computed once."""
        raise NotImplementedError

    def query_context(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per query, the tensors its candidates share (computed once per query)."""
        raise NotImplementedError

    def candidates(self, parts: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> torch.Tensor:
        """A chunk of cached candidates (n, ...) under one query's context -> (n, R) unit vectors."""
        raise NotImplementedError

    @torch.no_grad()
    def score(self, query_regions: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, cache: CorpusCache,
              chunk: int = 4096) -> torch.Tensor:
        """query_regions (Q, C, k, k), tokens (Q, T), lengths (Q,) -> (Q, N) cosines of each query with every
        candidate, both under the query's expression; candidates in batches of `chunk`."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        lengths = lengths.to(tokens.device)
        queries = self.embed(query_regions, tokens, lengths)  # (Q, R)
        scores = queries.new_empty(len(queries), cache.size)
        for i, context in enumerate(self.query_context(tokens, lengths)):
            for start in range(0, cache.size, chunk):
                stop = min(start + chunk, cache.size)
                scores[i, start:stop] = self.candidates(cache.rows(start, stop), context) @ queries[i]  # (n,)
        return scores

    @torch.no_grad()
    def score_plain(self, query_regions: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                    corpus_regions: torch.Tensor) -> torch.Tensor:
        """The reference for `score`: `embed` of each (query, candidate) on its own, a Python loop -> (Q, N)."""
        lengths = lengths.to(tokens.device)
        queries = self.embed(query_regions, tokens, lengths)  # (Q, R)
        scores = queries.new_empty(len(queries), len(corpus_regions))
        for i in range(len(queries)):
            for j in range(len(corpus_regions)):
                candidate = self.embed(corpus_regions[j:j + 1], tokens[i:i + 1], lengths[i:i + 1])  # (1, R)
                scores[i, j] = candidate[0] @ queries[i]
        return scores


class GrnModel(RetrievalModel):
    """Sec. 3: a language encoder and the GatedResidual on the region map (conv) or its pooled vector (fc);
    R = C * k * k (conv) or C (fc)."""

    def __init__(self, cfg: GrnModelConfig, channels: int, map_size: int, embeddings: torch.Tensor):
        super().__init__()
        self.map_size = map_size
        self.text = build_language(cfg.language, embeddings, cfg)
        self.grn = GatedResidual(channels, self.text.dim, cfg.gate_hidden, cfg.residual, cfg.feature)

    def visual(self, regions: torch.Tensor) -> torch.Tensor:
        return pooled(regions) if self.grn.feature == "fc" else regions  # (B, C) or (B, C, k, k)

    def embed(self, regions, tokens, lengths):
        y = self.grn(self.visual(regions), self.text(tokens, lengths))  # (B, C, k, k) or (B, C)
        return F.normalize(y.flatten(1), dim=1)  # (B, R)

    def prepare_corpus(self, corpus_regions):
        x = self.visual(corpus_regions)  # (N, C, k, k) or (N, C)
        if self.grn.feature == "conv":  # the second convolutions run fastest on channels-last maps
            x = x.contiguous(memory_format=torch.channels_last)
        terms = self.grn.visual_terms(x)  # per first layer (N, H, ...)
        return CorpusCache(len(x), {"x": x, **{f"first{i}": t for i, t in enumerate(terms)}})

    def query_context(self, tokens, lengths):
        terms = self.grn.text_terms(self.text(tokens, lengths), self.map_size)  # per first layer (Q, H, ...)
        return [{f"first{i}": t[q:q + 1] for i, t in enumerate(terms)} for q in range(len(tokens))]

    def candidates(self, parts, context):
        first = [parts[name] + context[name] for name in sorted(context)]  # W_1 * [X, L] + b per layer (n, H, ...)
        y = self.grn.from_first_layers(parts["x"], first, inplace=True)  # (n, C, ...); `first` is ours to overwrite
        return F.normalize(y.flatten(1), dim=1)  # (n, R)


class VisualFeatureModel(RetrievalModel):
    """Table 2 (a): the pooled region vector alone (R = C); no text, no parameters."""

    def embed(self, regions, tokens, lengths):
        return F.normalize(pooled(regions), dim=1)  # (B, C)

    def prepare_corpus(self, corpus_regions):
        return CorpusCache(len(corpus_regions), {"v": F.normalize(pooled(corpus_regions), dim=1)})

    @torch.no_grad()
    def score(self, query_regions, tokens, lengths, cache, chunk=4096):
        return self.embed(query_regions, tokens, lengths) @ cache.parts["v"].T  # (Q, N): one product

    def query_context(self, tokens, lengths):
        return [{} for _ in range(len(tokens))]

    def candidates(self, parts, context):
        return parts["v"]


class ConcatFcModel(RetrievalModel):
    """Table 2 (c): [pooled X, L] -> one FC layer to fc_dim (R = fc_dim)."""

    def __init__(self, cfg: GrnModelConfig, channels: int, embeddings: torch.Tensor):
        super().__init__()
        self.channels = channels
        self.text = build_language(cfg.language, embeddings, cfg)
        self.fc = nn.Linear(channels + self.text.dim, cfg.fc_dim)

    def embed(self, regions, tokens, lengths):
        joint = torch.cat([pooled(regions), self.text(tokens, lengths)], 1)  # (B, C + D)
        return F.normalize(self.fc(joint), dim=1)  # (B, fc_dim)

    def prepare_corpus(self, corpus_regions):
        visual = F.linear(pooled(corpus_regions), self.fc.weight[:, :self.channels], self.fc.bias)  # (N, fc_dim)
        return CorpusCache(len(corpus_regions), {"visual": visual})

    def query_context(self, tokens, lengths):
        text = F.linear(self.text(tokens, lengths), self.fc.weight[:, self.channels:])  # (Q, fc_dim)
        return [{"text": text[q:q + 1]} for q in range(len(tokens))]

    def candidates(self, parts, context):
        return F.normalize(parts["visual"] + context["text"], dim=1)  # (n, fc_dim)


class VlLstmModel(RetrievalModel):
    """Table 2 (b): an LSTM (state fc_dim) over [W_v pooled X, e_1 .. e_T]; its state after the last word
    (R = fc_dim)."""

    def __init__(self, cfg: GrnModelConfig, channels: int, embeddings: torch.Tensor):
        super().__init__()
        self.embed_words = word_embedding(embeddings, cfg.embed_dim)
        self.image_in = nn.Linear(channels, cfg.embed_dim)  # the visual vector as the first "word"
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.fc_dim, batch_first=True)

    def embed(self, regions, tokens, lengths):
        image = self.image_in(pooled(regions))[:, None]  # (B, 1, E)
        out, _ = self.lstm(torch.cat([image, self.embed_words(tokens)], 1))  # (B, 1 + T, fc_dim)
        last = lengths.to(out.device).clamp(min=1)  # the step of word `length`, after the image's step 0
        return F.normalize(out[torch.arange(len(out), device=out.device), last], dim=1)  # (B, fc_dim)

    def prepare_corpus(self, corpus_regions):
        # The state starts at zero and the image comes first, so the state after step 0 is the candidate's own.
        _, (h, c) = self.lstm(self.image_in(pooled(corpus_regions))[:, None])  # (1, N, fc_dim) each
        return CorpusCache(len(corpus_regions), {"h": h[0], "c": c[0]})

    def query_context(self, tokens, lengths):
        words = self.embed_words(tokens)  # (Q, T, E)
        return [{"words": words[q:q + 1, :int(lengths[q].clamp(min=1))]} for q in range(len(tokens))]

    def candidates(self, parts, context):
        n = len(parts["h"])
        words = context["words"].expand(n, -1, -1).contiguous()  # (n, T_q, E): the query's words for every candidate
        out, _ = self.lstm(words, (parts["h"][None].contiguous(), parts["c"][None].contiguous()))  # (n, T_q, fc_dim)
        return F.normalize(out[:, -1], dim=1)  # (n, fc_dim)


def build_retrieval_model(model_cfg: GrnModelConfig, channels: int, map_size: int, embeddings: torch.Tensor
                          ) -> RetrievalModel:
    """One row of Tables 2-5: channels C and map size k of the cached region maps, word vectors (V, E)."""
    if model_cfg.kind == "grn":
        return GrnModel(model_cfg, channels, map_size, embeddings)
    if model_cfg.kind == "visual_feature":
        return VisualFeatureModel()
    if model_cfg.kind == "concat_fc":
        return ConcatFcModel(model_cfg, channels, embeddings)
    if model_cfg.kind == "vl_lstm":
        return VlLstmModel(model_cfg, channels, embeddings)
    raise ValueError(f"unknown retrieval model kind {model_cfg.kind!r}")
