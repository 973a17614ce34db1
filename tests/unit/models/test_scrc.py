"""SCRC: every variant's forward/backward, the captioner -> SCRC weight transfer, scoring, and
learning on a tiny synthetic set (loss falls, P@1 beats chance)."""
from __future__ import annotations

import pytest
import torch

from refexp.data.torch_datasets import collate_sequences
from refexp.models import build_model
from refexp.models.scrc import SPATIAL_DIM, Scrc, transfer_from_captioner

V = 12
VARIANTS = {
    "scrc_full": dict(),
    "scrc_no_context": dict(use_context=False),
    "scrc_no_context_spatial": dict(use_context=False, use_spatial=False),
    "image_free": dict(use_box=False, use_context=False),
    "captioner": dict(use_local=False),
}
SMALL = dict(embed_dim=8, hidden=16, feature_dim=12, crop_size=16)


def make_batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(b):
        x1, y1 = torch.randint(0, 20, (2,), generator=g).float()
        samples.append({
            "image": torch.randint(0, 256, (3, 48, 48), generator=g, dtype=torch.uint8),
            "box": torch.tensor([x1, y1, x1 + 20, y1 + 24]),
            "spatial": torch.rand(SPATIAL_DIM, generator=g) * 2 - 1,
            "tokens": torch.randint(4, V, (1 + i % 3,), generator=g),
        })
    return collate_sequences(samples)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_forward_backward(name):
    torch.manual_seed(0)
    model = build_model("scrc", vocab_size=V, **SMALL, **VARIANTS[name])
    batch = make_batch()
    logits = model(batch)
    assert logits.shape == (4, batch["inputs"].shape[1], V)
    ll, n = model.log_likelihood(batch)
    assert ll.shape == (4,) and torch.all(ll < 0)
    assert n.tolist() == [2, 3, 4, 2]  # words + <eos>
    (-ll.mean()).backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert grads["embed.weight"] is not None
    if VARIANTS[name].get("use_box", True) and VARIANTS[name].get("use_local", True):
        assert grads["cnn_local.proj.weight"].abs().sum() > 0
    if VARIANTS[name].get("use_context", True):
        assert grads["cnn_global.proj.weight"].abs().sum() > 0
    else:
        assert not hasattr(model, "lstm_global")


def test_image_free_has_no_image_inputs():
    model = Scrc(V, **SMALL, use_box=False, use_context=False)
    assert not hasattr(model, "cnn_local") and not hasattr(model, "cnn_global")
    assert model.lstm_local.input_size == 16 + SPATIAL_DIM
    batch = make_batch()
    del batch["image"], batch["box"]
    assert model(batch).shape[0] == 4


def trained_captioner() -> Scrc:
    torch.manual_seed(1)
    cap = Scrc(V, **SMALL, use_local=False)
    with torch.no_grad():  # give every weight a non-trivial value
        for p in cap.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return cap.eval()


def test_transfer_copies_global_into_local_with_zero_spatial_weights():
    cap = trained_captioner()
    torch.manual_seed(2)
    model = Scrc(V, **SMALL).eval()
    transfer_from_captioner(model, cap)
    h, f = 16, 12
    w = model.lstm_local.weight_ih_l0
    assert torch.equal(w[:, : h + f], cap.lstm_global.weight_ih_l0)
    assert torch.count_nonzero(w[:, h + f:]) == 0 and w.shape[1] == h + f + SPATIAL_DIM
    for name in ("weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert torch.equal(getattr(model.lstm_local, name), getattr(cap.lstm_global, name))
    assert torch.equal(model.w_local.weight, cap.w_global.weight)
    assert torch.equal(model.w_global.weight, cap.w_global.weight)
    for (k, a), (_, b) in zip(model.cnn_local.state_dict().items(), cap.cnn_global.state_dict().items()):
        assert torch.equal(a, b), k


def test_transferred_model_without_context_scores_like_the_captioner_on_the_crop():
    """LRCN as retriever: before fine-tuning, a w/o-context SCRC scores p(S | I_box) exactly as the
    captioner scores the box crop taken as a whole image, whatever x_spatial is (zero weights)."""
    cap = trained_captioner()
    model = Scrc(V, **SMALL, use_context=False).eval()
    transfer_from_captioner(model, cap)
    batch = make_batch(6)
    ll_model, _ = model.log_likelihood(batch)
    # The captioner on the box: x_context of the crop equals x_box of the box (same CNN, same crop).
    from refexp.models.layers import crop_and_resize

    crops = crop_and_resize(batch["image"], batch["box"], SMALL["crop_size"])
    # A float crop taken whole at its own size is an identity resample.
    x_ctx = cap.cnn_global(crop_and_resize(crops, torch.tensor([[0.0, 0.0, 16.0, 16.0]]).expand(6, 4), 16))
    x_box = model.box_features(batch["image"], batch["box"])
    torch.testing.assert_close(x_ctx, x_box, rtol=1e-4, atol=1e-5)
    h_lang = cap._language(batch["inputs"])
    from refexp.models.layers import sequence_log_likelihood

    ll_cap, _ = sequence_log_likelihood(cap.r + cap._global_logits(h_lang, x_box), batch["targets"])
    torch.testing.assert_close(ll_model, ll_cap, rtol=1e-5, atol=1e-5)
    # And with the box covering the whole image, the scores equal the captioner's on the image.
    whole = dict(batch, box=torch.tensor([[0.0, 0.0, 48.0, 48.0]]).expand(6, 4))
    torch.testing.assert_close(model.log_likelihood(whole)[0], cap.log_likelihood(whole)[0], rtol=1e-5, atol=1e-5)


def test_score_matches_log_likelihood_per_pair():
    torch.manual_seed(3)
    model = Scrc(V, **SMALL).eval()
    batch = make_batch(3)
    image = batch["image"][:1]
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 5.0, 40.0, 30.0]])
    spatial = torch.rand(2, SPATIAL_DIM)
    ll, lengths = model.score(image, boxes, spatial, batch["inputs"], batch["targets"], chunk=4)
    assert ll.shape == (3, 2)
    for q in range(3):
        for k in range(2):
            one = {"image": image, "box": boxes[k:k + 1], "spatial": spatial[k:k + 1],
                   "inputs": batch["inputs"][q:q + 1], "targets": batch["targets"][q:q + 1]}
            torch.testing.assert_close(ll[q, k], model.log_likelihood(one)[0][0], rtol=1e-5, atol=1e-5)
    assert lengths.tolist() == [2, 3, 4]


def test_length_normalisation_never_changes_the_ranking_of_one_query():
    """All candidates of a query share its length, so dividing by it keeps the argmax: the
    paper's product over words (the summed log-likelihood) and the normalised score agree on P@1."""
    torch.manual_seed(4)
    model = Scrc(V, **SMALL).eval()
    batch = make_batch(3)
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 5.0, 40.0, 30.0], [2.0, 2.0, 47.0, 47.0]])
    ll, n = model.score(batch["image"][:1], boxes, torch.rand(3, SPATIAL_DIM), batch["inputs"], batch["targets"])
    assert torch.equal(ll.argmax(1), (ll / n[:, None]).argmax(1))


def test_only_unknown_words_are_still_scored():
    model = Scrc(V, **SMALL).eval()
    batch = collate_sequences([{"image": torch.zeros(3, 48, 48, dtype=torch.uint8), "box": torch.tensor([0.0, 0, 10, 10]),
                                "spatial": torch.zeros(8), "tokens": torch.tensor([3, 3])}])  # <unk> <unk>
    ll, n = model.log_likelihood(batch)
    assert torch.isfinite(ll).all() and n.item() == 3


def toy_world(n: int, seed: int):
    """Images with a red and a blue square; the expression names one by colour or side."""
    g = torch.Generator().manual_seed(seed)
    words = {"red": 4, "blue": 5, "left": 6, "right": 7}
    samples, queries = [], []
    for _ in range(n):
        img = torch.full((3, 32, 32), 90, dtype=torch.uint8)
        xs = torch.randperm(3, generator=g)[:2] * 10 + 1  # two distinct columns
        y = int(torch.randint(2, 20, (1,), generator=g))
        boxes = []
        for colour, x in zip((0, 2), xs.tolist()):
            img[:, y:y + 9, x:x + 9] = 0
            img[colour, y:y + 9, x:x + 9] = 255
            boxes.append(torch.tensor([float(x), float(y), x + 9.0, y + 9.0]))
        spatial = [torch.tensor([b[0] / 16 - 1, b[1] / 16 - 1, b[2] / 16 - 1, b[3] / 16 - 1,
                                 (b[0] + b[2]) / 32 - 1, (b[1] + b[3]) / 32 - 1, 9 / 16, 9 / 16]) for b in boxes]
        target = int(torch.randint(0, 2, (1,), generator=g))
        left = 0 if xs[0] < xs[1] else 1
        word = (["red", "blue"][target] if torch.rand(1, generator=g) < 0.5 else ["left", "right"][0 if target == left else 1])
        tokens = torch.tensor([words[word]])
        samples.append({"image": img, "box": boxes[target], "spatial": spatial[target], "tokens": tokens})
        queries.append((img, torch.stack(boxes), torch.stack(spatial), tokens, target))
    return samples, queries


def test_scrc_learns_a_toy_world_and_beats_chance(tmp_path):
    from refexp.config import TrainingConfig
    from refexp.data.torch_datasets import pad_sequences
    from refexp.training.engine import fit
    from refexp.training.scrc import scrc_loss

    train, _ = toy_world(256, 0)
    _, test = toy_world(64, 1)
    torch.manual_seed(0)
    model = Scrc(8, embed_dim=8, hidden=32, feature_dim=16, crop_size=16)
    cfg = TrainingConfig(steps=100, batch_size=32, lr=0.01, log_every=10, checkpoint_every=1000, cpu_threads=1)
    fit(model, train, scrc_loss, cfg, tmp_path, seed=0, collate_fn=collate_sequences, progress=False,
            curve_path=tmp_path / "curve.csv")
    import csv

    losses = [float(r["loss"]) for r in csv.DictReader((tmp_path / "curve.csv").open())]
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    hits = 0
    for img, boxes, spatial, tokens, target in test:
        inputs, targets = pad_sequences([tokens], 1, 2, 0)
        ll, _ = model.score(img[None], boxes, spatial, inputs, targets)
        hits += int(ll[0].argmax()) == target
    assert hits / len(test) > 0.8  # chance is 0.5


def test_precut_crops_give_the_same_likelihood_as_cutting_in_the_model():
    from types import SimpleNamespace

    from refexp.training.scrc import PrecutCrops

    g = torch.Generator().manual_seed(1)
    store = torch.randint(0, 256, (3, 3, 48, 48), generator=g, dtype=torch.uint8)
    base = SimpleNamespace(
        images=SimpleNamespace(images=store, size=48),
        image_index=torch.tensor([2, 0, 2, 1, 0]),
        boxes=torch.tensor([[0.0, 0.0, 20.0, 30.0], [5.5, 7.0, 40.0, 41.0], [10.0, 2.0, 47.0, 20.0],
                            [1.0, 1.0, 48.0, 48.0], [30.0, 30.0, 45.0, 46.0]]),
        spatial=torch.rand(5, SPATIAL_DIM, generator=g) * 2 - 1,
        tokens=[torch.randint(4, V, (1 + i % 3,), generator=g) for i in range(5)],
    )
    precut = PrecutCrops(_Sized(base, 5), 16, use_box=True, use_context=True, chunk=2)
    raw = [{"image": store[base.image_index[i]], "box": base.boxes[i], "spatial": base.spatial[i],
            "tokens": base.tokens[i]} for i in range(5)]
    torch.manual_seed(0)
    model = build_model("scrc", vocab_size=V, **SMALL).eval()
    expected, _ = model.log_likelihood(collate_sequences(raw))
    batch = collate_sequences([precut[i] for i in range(5)])
    assert "image" not in batch and batch["box_crop"].shape == (5, 3, 16, 16)
    got, _ = model.log_likelihood(batch)
    torch.testing.assert_close(got, expected)


class _Sized:
    """A dataset stand-in with len(): the attributes PrecutCrops reads from a BoxExpressionDataset."""

    def __init__(self, ns, n: int):
        self.__dict__.update(vars(ns))
        self.n = n
        self.images = _Store(ns.images.images, ns.images.size)

    def __len__(self) -> int:
        return self.n


class _Store:
    def __init__(self, images, size):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)
