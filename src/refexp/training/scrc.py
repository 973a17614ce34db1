"""SCRC wiring over the prepared tables: caption pretraining, fine-tuning a variant, evaluation.

- `pretrain(cfg, paths)`: LRCN caption pretraining (W_local = 0) on the caption table's train split
  -> models/scrc/pretrained/model.pt.
- `finetune(cfg, paths, variant)`: builds the variant, transfers from the captioner (Sec. 3.2)
  unless `transfer: false`, fine-tunes on the train split's (image, box, expression) tuples unless
  `fine_tune: false` (LRCN-as-retriever) -> models/scrc/<variant>/model.pt.
- `evaluate(cfg, paths, variant)`: scores the test split's queries against (a) all annotated
  boxes of the image (P@1) and (b) proposals (R@1, R@10, oracle R@100), per expression kind,
  with the summed log-likelihood (the paper's Eq. 7) and the length-normalised one, and writes
  per-query predictions for the report's figures.

Vocabulary: the referring-expression vocabulary (train split) followed by caption words it lacks
(caption train split), so captioner and SCRC share word ids and the transfer is a plain copy.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from refexp.artifacts import save_torch, write_text
from refexp.config import Config, ScrcVariant
from refexp.data.proposals import proposals_for_images
from refexp.data.torch_datasets import (
    BoxExpressionDataset,
    CaptionDataset,
    ImageStore,
    collate_sequences,
    encode_tokens,
    pad_sequences,
    spatial_features,
    to_store_boxes,
)
from refexp.metrics import boxes as box_metrics
from refexp.models import build_model
from refexp.models.layers import crop_and_resize
from refexp.models.scrc import Scrc, transfer_from_captioner
from refexp.paths import Paths
from refexp.text.vocab import Vocab
from refexp.training.engine import fit, run_key
from refexp.training.features import FeatureCache
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

MODEL = "scrc"
PRETRAINED = "pretrained"
MODEL_FILE = "model.pt"
KINDS = ("attribute", "position", "relation")


# ---------------------------------------------------------------- inputs


def joint_vocab(paths: Paths, dataset: str, caption_dataset: str) -> Vocab:
    words = list(Vocab.load(paths.vocab(dataset)).words)
    caption_vocab = paths.prepared(caption_dataset) / "vocab.txt"
    if caption_vocab.exists():
        seen = set(words)
        words += [w for w in Vocab.load(caption_vocab).words if w not in seen]
    return Vocab(tuple(words))


def read_tuples(paths: Paths, dataset: str) -> pd.DataFrame:
    path = paths.tuples(dataset)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run prepare_referit for dataset '{dataset}' first")
    return pd.read_parquet(path)


def train_subset(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded `fraction` of the training images (all their tuples)."""
    if fraction >= 1.0:
        return frame
    images = np.array(sorted(frame["image_id"].astype(str).unique()))
    rng = np.random.default_rng(seed)
    keep = set(rng.permutation(images)[: max(1, math.ceil(fraction * len(images)))])
    return frame[frame["image_id"].astype(str).isin(keep)]


def finetune_tuples(tuples: pd.DataFrame, split: str) -> pd.DataFrame:
    """The fine-tuning tuples: the train split, or train and val (the paper's "trainval")."""
    splits = ("train", "val") if split == "trainval" else (split,)
    part = tuples[tuples["split"].isin(splits)]
    if part.empty:
        raise ValueError(f"no {'/'.join(splits)} tuples to fine-tune on")
    return part


def _image_store(cfg: Config, paths: Paths, frames: list[pd.DataFrame]) -> ImageStore:
    image_paths = pd.concat([f["image_path"] for f in frames]).dropna().astype(str)
    if image_paths.empty:
        raise ValueError("the table has no image paths; only the image-free variant (use_box: false, "
                         "use_context: false) can train without images")
    return ImageStore(image_paths.tolist(), paths.root, cfg.scrc.image_size)


class PrecutCrops(torch.utils.data.Dataset):
    """A BoxExpressionDataset / CaptionDataset whose crops are cut once, up front.

    Nothing is augmented, so every epoch would cut exactly the same I_box and I_im crops; cutting
    them per step (uint8 -> float of the whole 128x128 image, then roi_align, twice per tuple) cost
    about a third of a training step. Items carry box_crop (use_box) and context_crop (use_context)
    (3, c, c) in [0, 1], produced by the model's own `crop_and_resize`, instead of image + box; the
    whole-image crop is cut once per image, not once per tuple."""

    def __init__(self, base, crop_size: int, use_box: bool, use_context: bool, chunk: int = 256):
        self.base = base
        images = base.images
        pixels = images.images.float() / 255.0  # (N_images, 3, S, S), converted once
        self.image_index = base.image_index
        self.context = None
        if use_context:
            full = torch.tensor([[0.0, 0.0, float(images.size), float(images.size)]])
            self.context = torch.cat([
                crop_and_resize(pixels[i:i + chunk], full.expand(len(pixels[i:i + chunk]), 4), crop_size)
                for i in range(0, len(images), chunk)])  # (N_images, 3, c, c)
        self.box = None
        if use_box:
            self.box = torch.cat([
                crop_and_resize(pixels, base.boxes[i:i + chunk], crop_size, self.image_index[i:i + chunk])
                for i in range(0, len(base), chunk)])  # (N_tuples, 3, c, c)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = {"spatial": self.base.spatial[i] if hasattr(self.base, "spatial") else self.base.full_spatial,
                "tokens": self.base.tokens[i]}
        if self.box is not None:
            item["box_crop"] = self.box[i]
        if self.context is not None:
            item["context_crop"] = self.context[self.image_index[i]]
        return item


# ---------------------------------------------------------------- models


def build_scrc(cfg: Config, paths: Paths, vocab_size: int, variant: ScrcVariant | None) -> Scrc:
    """variant None = the captioner (W_local = 0)."""
    s = cfg.scrc
    weights = paths.backbone_weights(s.backbone, s.pretrained) if not s.frozen_backbone else None
    flags = (dict(use_local=False, use_box=False, use_spatial=False, use_context=True) if variant is None else
             dict(use_local=True, use_box=variant.use_box, use_spatial=variant.use_spatial, use_context=variant.use_context))
    return build_model(MODEL, vocab_size=vocab_size, embed_dim=s.embed_dim, hidden=s.hidden, feature_dim=s.feature_dim,
                       backbone=s.backbone, pretrained=s.pretrained, crop_size=s.crop_size, dropout=s.dropout,
                       cached_features=s.frozen_backbone, image_feature=s.image_feature,
                       backbone_weights=str(weights) if weights is not None else None, **flags)


def feature_cache(cfg: Config, paths: Paths, dataset: str) -> FeatureCache | None:
    """The frozen backbone's cache for `dataset` (scrc.frozen_backbone), else None."""
    if not cfg.scrc.frozen_backbone:
        return None
    return FeatureCache.open(paths.stage_dir("extract_features", dataset), cfg.scrc.backbone, cfg.scrc.crop_size,
                             cfg.scrc.image_feature)


def scrc_loss(model: Scrc, batch: dict) -> tuple[torch.Tensor, dict]:
    """Eq. 8 averaged over the batch: -sum_t log p(w_t | ...) per tuple."""
    ll, n = model.log_likelihood(batch)
    return -ll.mean(), {"nll_per_token": float(-ll.detach().sum() / n.sum())}


def scrc_run_key(cfg: Config, variant: str | None, *files: Path) -> str:
    """The engine's run_key for a pretraining (variant None) or a fine-tuning: the data and initial
    weights, the model code and every SCRC param that shapes the run besides its TrainingConfig."""
    import refexp.data.torch_datasets
    import refexp.models.backbones
    import refexp.models.layers
    import refexp.models.scrc

    model_params = cfg.scrc.model_dump(exclude={"variants", "training", "pretrain_training", "figure_examples",
                                                "n_proposals", "proposal_queries"})
    params = {"scrc": model_params, "variant": cfg.scrc.variant(variant).model_dump() if variant else None}
    return run_key(files, [refexp.models.scrc, refexp.models.layers, refexp.models.backbones,
                           refexp.data.torch_datasets, sys.modules[__name__]], params)


def initial_weights(cfg: Config, paths: Paths) -> list[Path]:
    """The pretrained backbone file the CNNs start from (empty for ImageNet or random weights): part of a
    checkpoint's key, so a run is never resumed after the backbone was retrained."""
    weights = paths.backbone_weights(cfg.scrc.backbone, cfg.scrc.pretrained)
    return [weights] if weights is not None and not cfg.scrc.frozen_backbone else []


def save_model(model: torch.nn.Module, path: Path) -> None:
    save_torch(model.state_dict(), path)


def load_model(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train this model first")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


# ---------------------------------------------------------------- stages


def pretrain(cfg: Config, paths: Paths, progress: bool = True) -> dict:
    s = cfg.scrc
    captions = pd.read_parquet(paths.prepared(s.caption_dataset) / "captions.parquet")
    train = captions[captions["split"] == "train"]
    vocab = joint_vocab(paths, s.dataset, s.caption_dataset)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    features = feature_cache(cfg, paths, s.caption_dataset)
    images = _image_store(cfg, paths, [train]) if features is None else None
    data = CaptionDataset(train, vocab, images, s.max_tokens, features=features)
    if images is not None:
        data = PrecutCrops(data, s.crop_size, use_box=False, use_context=True)
    model = build_scrc(cfg, paths, len(vocab), None)
    out_dir = paths.model_dir(MODEL, PRETRAINED)
    metrics = fit(model, data, scrc_loss, s.pretrain_config(cfg.training), out_dir, seed=cfg.run.seed,
                  collate_fn=collate_sequences, deterministic=cfg.run.deterministic, progress=progress,
                  curve_path=paths.plots("pretrain_scrc", PRETRAINED),
                  run_key=scrc_run_key(cfg, None, paths.prepared(s.caption_dataset) / "captions.parquet",
                                       paths.vocab(s.dataset), *initial_weights(cfg, paths)))
    save_model(model, out_dir / MODEL_FILE)
    metrics.update({"train/captions": len(train), "train/images": int(train["image_path"].nunique()), "vocab_size": len(vocab)})
    return metrics


def finetune(cfg: Config, paths: Paths, variant_name: str, dataset: str | None = None, progress: bool = True) -> dict:
    s = cfg.scrc
    variant = s.variant(variant_name)
    dataset = dataset or s.dataset
    tuples = read_tuples(paths, dataset)
    train = train_subset(finetune_tuples(tuples, s.finetune_split), variant.train_fraction, cfg.run.seed)
    vocab = joint_vocab(paths, dataset, s.caption_dataset) if variant.transfer else Vocab.load(paths.vocab(dataset))
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    needs_images = variant.use_box or variant.use_context
    features = feature_cache(cfg, paths, dataset) if needs_images else None
    images = (_image_store(cfg, paths, [train]) if variant.fine_tune and needs_images and features is None
              else None)
    model = build_scrc(cfg, paths, len(vocab), variant)
    if variant.transfer:
        captioner = load_model(build_scrc(cfg, paths, len(vocab), None), paths.model_dir(MODEL, PRETRAINED) / MODEL_FILE)
        transfer_from_captioner(model, captioner)
    out_dir = paths.model_dir(MODEL, variant_name)
    metrics: dict = {"train/tuples": len(train), "train/images": int(train["image_id"].nunique()), "vocab_size": len(vocab)}
    if variant.fine_tune:
        data = BoxExpressionDataset(train, vocab, images, s.max_tokens, features=features)
        if images is not None:
            data = PrecutCrops(data, s.crop_size, use_box=variant.use_box, use_context=variant.use_context)
        tcfg = s.finetune_config(cfg.training, variant_name)
        metrics.update(fit(model, data, scrc_loss, tcfg, out_dir, seed=cfg.run.seed, collate_fn=collate_sequences,
                           deterministic=cfg.run.deterministic, progress=progress,
                           curve_path=paths.plots("train_scrc", variant_name),
                           run_key=scrc_run_key(cfg, variant_name, paths.tuples(dataset), paths.vocab(dataset),
                                                *initial_weights(cfg, paths),
                                                *([paths.model_dir(MODEL, PRETRAINED) / MODEL_FILE] if variant.transfer else []))))
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics["train/steps"] = 0
        # No fine-tuning, so an empty curve: the DVC plot output still exists for every variant.
        write_text(paths.plots("train_scrc", variant_name), "step,loss\n")
    save_model(model, out_dir / MODEL_FILE)
    return metrics


def load_variant(cfg: Config, paths: Paths, variant_name: str, dataset: str) -> tuple[Scrc, Vocab]:
    variant = cfg.scrc.variant(variant_name)
    vocab = joint_vocab(paths, dataset, cfg.scrc.caption_dataset) if variant.transfer else Vocab.load(paths.vocab(dataset))
    model = load_model(build_scrc(cfg, paths, len(vocab), variant), paths.model_dir(MODEL, variant_name) / MODEL_FILE)
    return model.eval(), vocab


def evaluate(cfg: Config, paths: Paths, variant_name: str, dataset: str | None = None, split: str = "test") -> tuple[dict, pd.DataFrame]:
    """Metrics and one prediction row per query (for figures)."""
    s = cfg.scrc
    dataset = dataset or s.dataset
    variant = s.variant(variant_name)
    tuples = read_tuples(paths, dataset)
    test = tuples[tuples["split"] == split].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"dataset '{dataset}' has no '{split}' tuples")
    model, vocab = load_variant(cfg, paths, variant_name, dataset)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    needs_images = variant.use_box or variant.use_context
    features = feature_cache(cfg, paths, dataset) if needs_images else None
    images = _image_store(cfg, paths, [test]) if needs_images and features is None else None
    proposals, proposal_source = proposals_for_images(paths.raw(dataset), test, s.n_proposals, cfg.run.seed,
                                                      paths.root)
    # R@K: every query, or a seeded subset of scrc.proposal_queries queries (each costs K pair recurrences).
    with_proposals = np.ones(len(test), dtype=bool)
    if s.proposal_queries is not None and s.proposal_queries < len(test):
        with_proposals[:] = False
        with_proposals[np.random.default_rng(cfg.run.seed).choice(len(test), s.proposal_queries, replace=False)] = True
    rows = []
    started = time.perf_counter()
    for image_id, group in test.groupby("image_id", sort=True):
        regions = group.drop_duplicates("region_id")
        width, height = float(group["image_width"].iloc[0]), float(group["image_height"].iloc[0])
        image = images.images[images.lookup(group["image_path"].iloc[0])][None] if images is not None else None
        tokens = encode_tokens(group["tokens"], vocab, s.max_tokens)
        inputs, targets = pad_sequences(tokens, vocab.bos_id, vocab.eos_id, vocab.pad_id)
        annotated = regions[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        props = proposals.get(str(image_id), np.zeros((0, 4)))
        scored = {}
        scored_proposals = with_proposals[group.index.to_numpy()]
        for name, cands in (("annotated", annotated), ("proposals", props)):
            q = np.arange(len(group)) if name == "annotated" else np.flatnonzero(scored_proposals)
            if len(cands) == 0 or len(q) == 0:
                scored[name] = (np.zeros((len(group), 0)), None)
                continue
            n = len(cands)
            ll, lengths = candidate_log_likelihoods(model, s.image_size, image, features, str(group["image_path"].iloc[0]),
                                                    width, height, cands, inputs[q], targets[q])
            full_ll = np.zeros((len(group), n), dtype=np.float32)
            full_ll[q] = ll.numpy()
            scored[name] = (full_ll, lengths.numpy())
        for qi, row in enumerate(group.itertuples(index=False)):
            ann_ll, ann_len = scored["annotated"]
            prop_ll, _ = scored["proposals"]
            rows.append({
                "image_id": str(image_id), "image_path": row.image_path, "region_id": row.region_id,
                "expression": row.expression, "kind": row.kind if isinstance(row.kind, str) else "unknown",
                "gt": [row.x1, row.y1, row.x2, row.y2],
                "annotated": annotated.tolist(), "annotated_ll": ann_ll[qi].tolist(),
                "annotated_ll_norm": (ann_ll[qi] / ann_len[qi]).tolist() if ann_len is not None else [],
                "proposals_ll": prop_ll[qi].tolist() if scored_proposals[qi] else [],
                "proposals_scored": bool(scored_proposals[qi]), "n_tokens": int(ann_len[qi]) if ann_len is not None else 0,
            })
    elapsed = time.perf_counter() - started
    pred = pd.DataFrame(rows)
    metrics = ranking_metrics(pred, proposals)
    metrics.update({"test/queries": len(pred), "test/images": int(test["image_id"].nunique()),
                    "test/proposal_queries": int(with_proposals.sum()),
                    "test/proposal_source": proposal_source, "eval/ms_per_query": 1000 * elapsed / max(1, len(pred))})
    return metrics, pred


def candidate_log_likelihoods(model: Scrc, image_size: int, image: torch.Tensor | None, features: FeatureCache | None,
                              image_path: str, width: float, height: float, cands: np.ndarray,
                              inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(expression | candidate) for every (query, candidate) pair of one image: (Q, n) and the
    queries' lengths (Q,). cands: (n, 4) inclusive boxes on the original image."""
    cont = cands.astype(np.float32).copy()
    cont[:, 2:] += 1
    n = len(cands)
    spatial = torch.from_numpy(spatial_features(cont, np.full(n, width), np.full(n, height)))
    store = torch.from_numpy(to_store_boxes(cont, np.full(n, width), np.full(n, height), image_size)) if image is not None else torch.zeros(n, 4)
    pooled = {}
    if features is not None:
        pooled = {"box_pooled": torch.from_numpy(features.lookup(image_path, cands)),
                  "context_pooled": torch.from_numpy(features.whole_image(image_path, int(width), int(height)))[None]}
    return model.score(image, store, spatial, inputs, targets, **pooled)


def top_boxes(cfg: Config, paths: Paths, variant_name: str, rows: pd.DataFrame,
              proposals: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    """Per row of `rows` (any table with the tuples' columns, e.g. another model's test queries), the
    proposal of its image where the trained variant gives the expression the highest summed
    log-likelihood (the paper's Eq. 7); None where the image has no proposal."""
    s = cfg.scrc
    variant = s.variant(variant_name)
    model, vocab = load_variant(cfg, paths, variant_name, s.dataset)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    needs_images = variant.use_box or variant.use_context
    features = feature_cache(cfg, paths, s.dataset) if needs_images else None
    images = _image_store(cfg, paths, [rows]) if needs_images and features is None else None
    rows = rows.reset_index(drop=True)
    out: list[np.ndarray | None] = [None] * len(rows)
    for image_id, group in rows.groupby("image_id", sort=True):
        props = proposals.get(str(image_id), np.zeros((0, 4)))
        if len(props) == 0:
            continue
        image_path = str(group["image_path"].iloc[0])
        image = images.images[images.lookup(image_path)][None] if images is not None else None
        inputs, targets = pad_sequences(encode_tokens(group["tokens"], vocab, s.max_tokens), vocab.bos_id,
                                        vocab.eos_id, vocab.pad_id)
        ll, _ = candidate_log_likelihoods(model, s.image_size, image, features, image_path,
                                          float(group["image_width"].iloc[0]), float(group["image_height"].iloc[0]),
                                          props, inputs, targets)
        for row, best in zip(group.index, ll.argmax(1).tolist()):
            out[row] = props[best]
    return out


def top1_hits(pred: pd.DataFrame) -> np.ndarray:
    """Per query: the top-1 annotated box (summed log-likelihood) has IoU >= 0.5 with the truth (P@1's hits)."""
    gt = np.array(pred["gt"].tolist(), dtype=np.float64).reshape(-1, 4)
    ann = [np.array([np.asarray(c, dtype=np.float64) for c in a]).reshape(-1, 4) for a in pred["annotated"]]
    return box_metrics.p_at_1([np.asarray(x) for x in pred["annotated_ll"]], ann, gt).hits


def ranking_metrics(pred: pd.DataFrame, proposals: dict[str, np.ndarray], prefix: str = "test") -> dict:
    """P@1 (summed and length-normalised), R@1/R@10/oracle R@100 over proposals, chance, per kind."""
    out: dict = {}
    subsets = [("", pred)] + [(f"/{k}", pred[pred["kind"] == k]) for k in KINDS if (pred["kind"] == k).any()]
    for suffix, part in subsets:
        gt = np.array(part["gt"].tolist(), dtype=np.float64).reshape(-1, 4)
        ann = [np.array(a, dtype=np.float64).reshape(-1, 4) for a in part["annotated"]]
        p1 = box_metrics.p_at_1([np.array(x) for x in part["annotated_ll"]], ann, gt)
        out[f"{prefix}/p_at_1{suffix}"] = p1.value
        out[f"{prefix}/p_at_1_length_normalised{suffix}"] = box_metrics.p_at_1(
            [np.array(x) for x in part["annotated_ll_norm"]], ann, gt).value
        out[f"{prefix}/chance_p_at_1{suffix}"] = box_metrics.chance_at_1(ann, gt)
        if "proposals_scored" in part:  # R@K over the queries scored against proposals
            part = part[part["proposals_scored"]]
            gt = np.array(part["gt"].tolist(), dtype=np.float64).reshape(-1, 4)
        props = [proposals.get(i, np.zeros((0, 4))) for i in part["image_id"]]
        prop_scores = [np.array(x) for x in part["proposals_ll"]]
        out[f"{prefix}/recall_at_1{suffix}"] = box_metrics.recall_at_k(prop_scores, props, gt, 1).value
        out[f"{prefix}/recall_at_10{suffix}"] = box_metrics.recall_at_k(prop_scores, props, gt, 10).value
        out[f"{prefix}/oracle_recall_at_100{suffix}"] = box_metrics.oracle_recall([p[:100] for p in props], gt).value
        out[f"{prefix}/chance_recall_at_1{suffix}"] = box_metrics.chance_at_1(props, gt)
        if suffix == "":
            out[f"{prefix}/no_annotated_candidates"] = p1.n_no_candidates
            out[f"{prefix}/no_proposals"] = sum(len(p) == 0 for p in props)
    return out
