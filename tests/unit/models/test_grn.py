import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from refexp.config import GrnModelConfig
from refexp.metrics.retrieval import retrieval_metrics
from refexp.models.grn import (GatedResidual, LstmEncoder, SelfAttentionEncoder, build_retrieval_model,
                               retrieval_loss)

C, K, VOCAB, EMBED = 8, 3, 20, 6
SMALL = {"embed_dim": EMBED, "text_hidden": 5, "gate_hidden": 4, "fc_dim": 7}

ALL_MODELS = ([{"kind": "visual_feature"}, {"kind": "vl_lstm"}]
              + [{"kind": "concat_fc", "language": lang} for lang in ("lstm", "self_attention")]
              + [{"kind": "grn", "language": lang, "residual": res, "feature": feat}
                 for lang in ("lstm", "self_attention") for res in ("none", "visual", "compose")
                 for feat in ("conv", "fc")])


def _ids(settings: dict) -> str:
    return "-".join(str(v) for v in settings.values())


def _model(settings: dict, channels: int = C, map_size: int = K, seed: int = 0, **sizes):
    torch.manual_seed(seed)
    cfg = GrnModelConfig(**{**SMALL, **sizes, **settings})
    model = build_retrieval_model(cfg, channels, map_size, torch.randn(VOCAB, cfg.embed_dim))
    grn = getattr(model, "grn", None)
    if grn is not None:  # off their starting value, so the fast path must use them
        with torch.no_grad():
            grn.w_g.fill_(0.7)
            if grn.w_r is not None:
                grn.w_r.fill_(1.3)
    return model


def _tokens(lengths: list[int], width: int | None = None, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    tokens = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens[row, :n] = torch.randint(1, VOCAB, (n,), generator=g)
    return tokens, torch.tensor(lengths)


def _conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 3x3 convolution with zero padding 1, by loops: x (Cin, k, k), w (Cout, Cin, 3, 3) -> (Cout, k, k)."""
    cin, k, _ = x.shape
    out = np.zeros((w.shape[0], k, k))
    for o in range(w.shape[0]):
        for i in range(k):
            for j in range(k):
                total = b[o]
                for c in range(cin):
                    for di in range(3):
                        for dj in range(3):
                            ii, jj = i + di - 1, j + dj - 1
                            if 0 <= ii < k and 0 <= jj < k:
                                total += w[o, c, di, dj] * x[c, ii, jj]
                out[o, i, j] = total
    return out


# ---------------------------------------------------------------- the fast path


@pytest.mark.parametrize("settings", ALL_MODELS, ids=_ids)
def test_fast_corpus_scoring_equals_the_plain_loop(settings):
    model = _model(settings)
    g = torch.Generator().manual_seed(2)
    queries, corpus = torch.randn(3, C, K, K, generator=g), torch.randn(7, C, K, K, generator=g)
    tokens, lengths = _tokens([4, 1, 2], width=6)  # padded past the longest too
    cache = model.prepare_corpus(corpus)
    fast = model.score(queries, tokens, lengths, cache, chunk=3)  # 7 candidates in chunks of 3, 3, 1
    plain = model.score_plain(queries, tokens, lengths, corpus)
    assert fast.shape == plain.shape == (3, 7)
    assert torch.allclose(fast, plain, atol=1e-5)
    assert float(fast.abs().max()) <= 1 + 1e-5  # cosines
    # The chunk size changes nothing.
    assert torch.allclose(model.score(queries, tokens, lengths, cache, chunk=100), fast, atol=1e-6)


# ---------------------------------------------------------------- Sec. 3.2 by hand


def _one_cell_block(residual: str) -> GatedResidual:
    """C = D = H = 1 on a 1x1 map: only each kernel's centre tap ever meets the input."""
    block = GatedResidual(1, 1, 1, residual, "conv")
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        block.gate_in.weight[0, :, 1, 1] = torch.tensor([0.5, -1.0])  # W_g1 on [X, L]
        block.gate_in.bias.fill_(0.2)
        block.gate_out.weight[0, 0, 1, 1] = 2.0  # W_g2
        block.gate_out.bias.fill_(-0.5)
        if residual == "compose":
            block.compose_in.weight[0, :, 1, 1] = torch.tensor([1.0, 1.0])  # W_r1
            block.compose_out.weight[0, 0, 1, 1] = 3.0  # W_r2
            block.compose_out.bias.fill_(0.1)
        block.w_g.fill_(0.5)
        if block.w_r is not None:
            block.w_r.fill_(2.0)
    return block


@pytest.mark.parametrize("residual", ["none", "visual", "compose"])
def test_equations_1_3_4_5_by_hand(residual):
    x, l = 1.5, 0.4
    gate = 1 / (1 + math.exp(-(2.0 * max(0.5 * x - 1.0 * l + 0.2, 0) - 0.5)))  # Eq. 1: sigma(W_g2 ReLU(W_g1 [X, L]))
    y_g = gate * x
    y_r = {"none": 0.0, "visual": x, "compose": 3.0 * max(x + l, 0) + 0.1}[residual]  # Eq. 3 / Eq. 4
    expected = 0.5 * y_g + 2.0 * y_r  # Eq. 5 with w_g = 0.5, w_r = 2 ("none": w_g Y_g alone)
    out = _one_cell_block(residual)(torch.tensor([[[[x]]]]), torch.tensor([[l]]))
    assert out.shape == (1, 1, 1, 1)
    assert float(out.detach()) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("residual", ["none", "visual", "compose"])
@pytest.mark.parametrize("k", [2, 3])
def test_the_gated_residual_equals_loop_convolutions_over_the_tiled_text(residual, k):
    torch.manual_seed(3)
    block = GatedResidual(2, 3, 4, residual, "conv")
    with torch.no_grad():
        block.w_g.fill_(0.8)
        if block.w_r is not None:
            block.w_r.fill_(1.7)
    x, text = torch.randn(1, 2, k, k), torch.randn(1, 3)
    out = block(x, text)[0].detach().numpy()
    xn = x[0].numpy().astype(np.float64)
    joint = np.concatenate([xn, np.broadcast_to(text[0].numpy()[:, None, None], (3, k, k))])  # [X, tile(L)]

    def params(layer):
        return layer.weight.detach().numpy().astype(np.float64), layer.bias.detach().numpy().astype(np.float64)

    hidden = np.maximum(_conv_same(joint, *params(block.gate_in)), 0)
    y = 0.8 * (1 / (1 + np.exp(-_conv_same(hidden, *params(block.gate_out))))) * xn
    if residual == "visual":
        y = y + 1.7 * xn
    elif residual == "compose":
        y = y + 1.7 * _conv_same(np.maximum(_conv_same(joint, *params(block.compose_in)), 0), *params(block.compose_out))
    np.testing.assert_allclose(out, y, atol=1e-5)


@pytest.mark.parametrize("residual", ["none", "visual", "compose"])
def test_the_fc_variant_is_the_conv_block_on_pooled_1x1_maps(residual):
    torch.manual_seed(4)
    fc = GatedResidual(C, 5, 4, residual, "fc")
    conv = GatedResidual(C, 5, 4, residual, "conv")  # random off-centre taps: a 1x1 map never meets them
    with torch.no_grad():
        for name in ("gate_in", "gate_out", "compose_in", "compose_out"):
            if hasattr(fc, name):
                getattr(conv, name).weight[:, :, 1, 1] = getattr(fc, name).weight
                getattr(conv, name).bias.copy_(getattr(fc, name).bias)
    regions, text = torch.randn(6, C, K, K), torch.randn(6, 5)
    pooled = regions.mean(dim=(2, 3))
    assert torch.allclose(fc(pooled, text), conv(pooled[:, :, None, None], text)[:, :, 0, 0], atol=1e-6)
    # The whole model: grn_fc on k x k maps is the conv GRN on their 1x1 means.
    fc_model = _model({"kind": "grn", "residual": residual, "feature": "fc"})
    conv_model = _model({"kind": "grn", "residual": residual, "feature": "conv"}, map_size=1)
    conv_model.text.load_state_dict(fc_model.text.state_dict())
    with torch.no_grad():
        for name, p in fc_model.grn.named_parameters():
            target = dict(conv_model.grn.named_parameters())[name]
            if name.endswith(".weight"):
                target[:, :, 1, 1] = p
            else:
                target.copy_(p)
    tokens, lengths = _tokens([3, 1, 2, 2, 1, 3])
    assert torch.allclose(fc_model.embed(regions, tokens, lengths),
                          conv_model.embed(regions.mean(dim=(2, 3), keepdim=True), tokens, lengths), atol=1e-6)


@pytest.mark.parametrize("residual", ["visual", "compose"])
def test_w_g_and_w_r_start_at_one_and_are_trained(residual):
    torch.manual_seed(5)
    model = build_retrieval_model(GrnModelConfig(**SMALL, residual=residual), C, K, torch.randn(VOCAB, EMBED))
    assert model.grn.w_g.item() == 1.0 and model.grn.w_r.item() == 1.0
    tokens, lengths = _tokens([2, 3])
    query = model.embed(torch.randn(2, C, K, K), tokens, lengths)
    candidates = model.embed_candidates(torch.randn(2, 4, C, K, K), tokens, lengths)
    model.retrieval_loss(query, candidates, 0.1).backward()
    assert model.grn.w_g.grad is not None and float(model.grn.w_g.grad.abs()) > 0
    assert model.grn.w_r.grad is not None and float(model.grn.w_r.grad.abs()) > 0


def test_no_residual_has_no_w_r():
    model = _model({"kind": "grn", "residual": "none"})
    assert model.grn.w_r is None and not hasattr(model.grn, "compose_in")


# ---------------------------------------------------------------- language


def test_self_attention_weights_sum_to_one_over_the_words_and_ignore_padding():
    torch.manual_seed(6)
    enc = SelfAttentionEncoder(torch.randn(VOCAB, EMBED), EMBED)
    tokens, lengths = _tokens([4, 1, 3], width=6)
    weights, words = enc.weights(tokens, lengths)
    assert torch.allclose(weights.sum(1), torch.ones(3))
    assert (weights[0, 4:] == 0).all() and (weights[1, 1:] == 0).all() and (weights[2, 3:] == 0).all()
    assert (weights[0, :4] > 0).all()
    # By hand for row 0: context = mean of its 4 embeddings, a score per [word, context], softmax, weighted sum.
    e = enc.embed.weight[tokens[0, :4]]  # (4, E)
    context = e.mean(0)
    logits = torch.stack([enc.score(torch.cat([w, context])) for w in e])[:, 0]
    a = torch.softmax(logits, 0)
    assert torch.allclose(weights[0, :4], a, atol=1e-6)
    assert torch.allclose(enc(tokens, lengths)[0], (a[:, None] * e).sum(0), atol=1e-6)
    # Whatever lies past the length changes nothing.
    junk = tokens.clone()
    junk[0, 4:] = 5
    assert torch.allclose(enc.weights(junk, lengths)[0], weights)


def test_the_lstm_encoder_reads_the_state_after_the_last_word():
    torch.manual_seed(7)
    enc = LstmEncoder(torch.randn(VOCAB, EMBED), EMBED, 5)
    tokens, lengths = _tokens([4, 2], width=5)
    out = enc(tokens, lengths)
    for row, n in enumerate([4, 2]):
        _, (h, _) = enc.lstm(enc.embed(tokens[row:row + 1, :n]))
        assert torch.allclose(out[row], h[0, 0], atol=1e-6)


def test_the_embeddings_start_from_the_matrix_and_train():
    matrix = torch.randn(VOCAB, EMBED)
    model = build_retrieval_model(GrnModelConfig(**SMALL), C, K, matrix)
    assert torch.equal(model.text.embed.weight.detach(), matrix) and model.text.embed.weight.requires_grad
    assert model.text.embed.weight.data_ptr() != matrix.data_ptr()  # a copy
    with pytest.raises(ValueError, match="embeddings"):
        build_retrieval_model(GrnModelConfig(**SMALL), C, K, torch.randn(VOCAB, EMBED + 1))


@pytest.mark.parametrize("settings", ALL_MODELS, ids=_ids)
def test_padding_changes_no_representation(settings):
    model = _model(settings)
    regions = torch.randn(3, C, K, K)
    tokens, lengths = _tokens([3, 1, 2])
    padded = F.pad(tokens, (0, 4))  # four more <pad> columns
    junk = padded.clone()
    junk[1, 1:] = 7  # ids past a row's length
    reference = model.embed(regions, tokens, lengths)
    assert torch.allclose(model.embed(regions, padded, lengths), reference, atol=1e-6)
    assert torch.allclose(model.embed(regions, junk, lengths), reference, atol=1e-6)
    assert torch.allclose(reference.norm(dim=1), torch.ones(3), atol=1e-5)  # unit vectors


# ---------------------------------------------------------------- baselines


def test_visual_feature_is_the_cosine_of_pooled_maps_and_has_no_parameters():
    model = _model({"kind": "visual_feature"})
    assert list(model.parameters()) == []
    queries, corpus = torch.randn(3, C, K, K), torch.randn(5, C, K, K)
    tokens, lengths = _tokens([2, 2, 2])
    scores = model.score(queries, tokens, lengths, model.prepare_corpus(corpus))
    expected = F.cosine_similarity(queries.mean((2, 3))[:, None], corpus.mean((2, 3))[None], dim=-1)
    assert torch.allclose(scores, expected, atol=1e-6)


def test_vl_lstm_feeds_the_projected_visual_vector_first_then_the_words():
    model = _model({"kind": "vl_lstm"})
    regions = torch.randn(1, C, K, K)
    tokens, lengths = _tokens([3])
    seq = torch.cat([model.image_in(regions.mean((2, 3)))[:, None], model.embed_words(tokens)], 1)  # (1, 4, E)
    _, (h, _) = model.lstm(seq)
    assert torch.allclose(model.embed(regions, tokens, lengths), F.normalize(h[0], dim=1), atol=1e-6)


def test_concat_fc_is_one_linear_layer_on_pooled_x_and_l():
    model = _model({"kind": "concat_fc"})
    regions = torch.randn(2, C, K, K)
    tokens, lengths = _tokens([3, 1])
    joint = torch.cat([regions.mean((2, 3)), model.text(tokens, lengths)], 1)
    expected = F.normalize(joint @ model.fc.weight.T + model.fc.bias, dim=1)
    assert torch.allclose(model.embed(regions, tokens, lengths), expected, atol=1e-6)


# ---------------------------------------------------------------- the loss


def test_the_loss_is_the_softmax_cross_entropy_over_cosines_by_hand():
    cosines = [0.8, 0.6, -0.2, 0.0]
    query = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[[c, math.sqrt(1 - c * c)] for c in cosines]])
    t = 0.5
    expected = -math.log(math.exp(0.8 / t) / sum(math.exp(c / t) for c in cosines))
    assert float(retrieval_loss(query, candidates, t)) == pytest.approx(expected, abs=1e-6)
    # Cosines, not raw dot products: the lengths of the vectors do not matter; the batch mean.
    scaled = retrieval_loss(3 * query, candidates * torch.tensor([1.0, 2.0, 0.5, 4.0])[None, :, None], t)
    assert float(scaled) == pytest.approx(expected, abs=1e-6)
    other = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # cosines 0 and 1 for the query [1, 0]
    expected_other = -math.log(math.exp(0) / (math.exp(0) + math.exp(1 / t)))
    both = retrieval_loss(torch.cat([query, query]), torch.cat([candidates[:, :2], other]), t)
    first = -math.log(math.exp(0.8 / t) / (math.exp(0.8 / t) + math.exp(0.6 / t)))
    assert float(both) == pytest.approx((first + expected_other) / 2, abs=1e-6)
    assert float(_model({"kind": "grn"}).retrieval_loss(query, candidates, t)) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- it learns


def _aspect_world(n: int, g: torch.Generator) -> dict:
    """Regions of 4 aspects, 2 channels each (C = 8, k = 3). A query (region r, aspect word a): its target
    copies r's aspect-a channels (plus noise) and nothing else; its distractor copies every OTHER aspect's
    channels, so it looks more like r than the target does unless the word picks the channels."""
    region = torch.randn(n, 8, 3, 3, generator=g)
    aspect = torch.randint(0, 4, (n,), generator=g)
    own = torch.zeros(n, 8, 1, 1, dtype=torch.bool)
    own[torch.arange(n), 2 * aspect] = True
    own[torch.arange(n), 2 * aspect + 1] = True
    target = torch.where(own, region + 0.1 * torch.randn(n, 8, 3, 3, generator=g), torch.randn(n, 8, 3, 3, generator=g))
    distractor = torch.where(own, torch.randn(n, 8, 3, 3, generator=g), region + 0.1 * torch.randn(n, 8, 3, 3, generator=g))
    length = torch.randint(1, 3, (n,), generator=g)
    tokens = torch.zeros(n, 2, dtype=torch.long)
    tokens[:, 0] = aspect + 1  # the aspect's word, then sometimes a filler word (5)
    tokens[length == 2, 1] = 5
    return {"region": region, "target": target, "distractor": distractor, "tokens": tokens, "lengths": length}


def _recall_at_1(model, world: dict) -> float:
    corpus = torch.cat([world["target"], world["distractor"]])  # (2Q, C, k, k)
    with torch.no_grad():
        scores = model.score(world["region"], world["tokens"], world["lengths"], model.prepare_corpus(corpus), 64)
    q = len(scores)
    is_target = np.zeros((q, 2 * q), dtype=bool)
    is_target[np.arange(q), np.arange(q)] = True
    return retrieval_metrics(scores.numpy(), is_target, ks=(1,))["recall_at_1"]


def test_the_grn_learns_word_dependent_retrieval():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _learn_the_aspect_world()
    finally:
        torch.set_num_threads(threads)


def _learn_the_aspect_world():
    """300 steps of batch 32: about 6 s on one thread of this 2-core machine."""
    torch.manual_seed(8)
    cfg = GrnModelConfig(embed_dim=8, text_hidden=8, gate_hidden=16, fc_dim=16)
    model = build_retrieval_model(cfg, 8, 3, torch.randn(6, 8))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(9)
    test_world = _aspect_world(50, torch.Generator().manual_seed(10))  # 100 candidates: chance R@1 = 0.01
    before = _recall_at_1(model, test_world)
    losses = []
    for _ in range(300):
        w = _aspect_world(32, g)
        others = torch.roll(w["target"], 1, 0)[:, None]  # another query's positive (the paper's negatives)
        candidates = torch.cat([w["target"][:, None], w["distractor"][:, None], others], 1)  # (B, 3, C, k, k)
        query = model.embed(w["region"], w["tokens"], w["lengths"])
        loss = model.retrieval_loss(query, model.embed_candidates(candidates, w["tokens"], w["lengths"]), 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = _recall_at_1(model, test_world)
    visual = _recall_at_1(_model({"kind": "visual_feature"}), test_world)
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:30])
    assert after > 0.5 > max(before, visual)  # chance is 0.01
