"""Train and evaluate paper 003's attention box regression through the one engine.

- `RegressionExamples.from_tuples(df, vocab, image_size, repo_root, use_image)`: the prepared
  tuples as in-memory tensors (token ids, input-pixel (x, y, w, h) targets, the target's area in
  feature-map cells, images resized to image_size x image_size, decoded once per image).
- `build_model(section, variant, vocab, init_box, seed)`: backbone + embeddings + model.
- `loss_fn(model, batch)`: the engine's loss (paper's L with the variant's lambdas).
- `predict(model, examples)` and `evaluate(...)`: boxes mapped back to each original image
  (inclusive pixels), `test/accuracy` (IoU >= 0.5) overall and per expression kind.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from refexp.config import AttentionRegressionConfig, AttentionRegressionModelConfig
from refexp.data.skips import DataError
from refexp.metrics.attention import attention_localisation, cells_in_box, target_size_groups
from refexp.metrics.boxes import paired_iou
from refexp.metrics.chance import BOX_COLUMNS, denormalise, mean_normalised_box, normalised_boxes
from refexp.models.attention_regression import AttentionRegression, regression_loss
from refexp.text.embeddings import embedding_matrix
from refexp.text.vocab import Vocab

log = logging.getLogger(__name__)


def _load_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read image ({err})") from None


@dataclass
class RegressionExamples(Dataset):
    tokens: torch.Tensor  # (N, L) ids, 0 = <pad>
    lengths: torch.Tensor  # (N,)
    target: torch.Tensor  # (N, 4) x, y, w, h in input pixels
    target_cells: torch.Tensor  # (N,) ground-truth area in feature-map cells
    image_index: torch.Tensor  # (N,) row of `images`
    images: torch.Tensor | None  # (n_images, 3, S, S) uint8, or None for text-only variants
    empty_expressions: int  # expressions with no token, fed as a single <unk>
    features: torch.Tensor | None = None  # (n_images, C, h, w) cached frozen-backbone maps

    def cache_features(self, model: AttentionRegression, batch_size: int = 64) -> None:
        """Run a frozen backbone once per image (the paper freezes VGG16) and drop the pixels."""
        if self.images is None:
            return
        maps = [model.image_features(self.images[i:i + batch_size].float() / 255.0)
                for i in range(0, len(self.images), batch_size)]
        self.features, self.images = torch.cat(maps), None

    @classmethod
    def from_tuples(cls, df: pd.DataFrame, vocab: Vocab, image_size: int, grid: int, repo_root: Path,
                    use_image: bool) -> "RegressionExamples":
        if df.empty:
            raise DataError("<tuples>", "no tuples to build regression examples from")
        ids = [vocab.encode(list(t)) or [vocab.unk_id] for t in df["tokens"]]
        empty = sum(len(t) == 0 for t in df["tokens"])
        max_len = max(len(i) for i in ids)
        tokens = torch.zeros(len(ids), max_len, dtype=torch.long)
        for row, seq in enumerate(ids):
            tokens[row, :len(seq)] = torch.tensor(seq)
        norm = torch.from_numpy(normalised_boxes(df)).float()  # (N, 4)
        codes, uniques = pd.factorize(df["image_id"])
        images = None
        if use_image:
            paths = df.groupby("image_id", sort=False)["image_path"].first().reindex(uniques)
            missing = paths[paths.isna()]
            if len(missing):
                raise DataError("tuples.parquet", "no image_path; this variant needs images "
                                "(use an image-free variant such as text_only)", record=f"image {missing.index[0]}")
            images = torch.from_numpy(np.stack([_load_image(repo_root / p, image_size) for p in paths]))
            images = images.permute(0, 3, 1, 2).contiguous()
        return cls(tokens, torch.tensor([len(i) for i in ids]), norm * image_size,
                   norm[:, 2] * norm[:, 3] * grid * grid, torch.from_numpy(codes.astype(np.int64)), images, empty)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        item = {"tokens": self.tokens[i], "lengths": self.lengths[i], "target": self.target[i],
                "target_cells": self.target_cells[i]}
        if self.features is not None:
            item["features"] = self.features[self.image_index[i]]
        elif self.images is not None:
            item["images"] = self.images[self.image_index[i]]
        return item

    def batch(self, index: torch.Tensor) -> dict:
        """Rows `index` as one batch (evaluation; the engine collates __getitem__ items)."""
        return collate([self[int(i)] for i in index])


def collate(items: list[dict]) -> dict:
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    # Trim padding to the batch's longest expression.
    batch["tokens"] = batch["tokens"][:, :int(batch["lengths"].max())]
    if "images" in batch:
        batch["images"] = batch["images"].float() / 255.0  # backbones take [0, 1]
    return batch


def build_model(section: AttentionRegressionConfig, variant: str, vocab: Vocab,
                init_box: tuple[float, float, float, float], seed: int,
                backbone_weights: Path | None = None) -> AttentionRegression:
    """backbone_weights: the pretrained `tiny` body (Paths.backbone_weights) when section.pretrained."""
    from refexp.models.backbones import build_backbone

    mcfg = section.variant_model(variant)
    backbone = build_backbone(section.backbone, section.pretrained, backbone_weights) if mcfg.use_image else None
    embeddings, coverage = embedding_matrix(mcfg.embeddings, vocab, mcfg.embedding_dim, mcfg.glove_file, seed)
    model = AttentionRegression(mcfg, len(vocab), image_size=section.image_size, backbone=backbone,
                                feature_channels=backbone.channels if backbone is not None else 0,
                                freeze_backbone=section.freeze_backbone, embeddings=embeddings, init_box=init_box)
    model.embedding_coverage = coverage
    return model


def make_loss_fn(mcfg: AttentionRegressionModelConfig):
    def loss_fn(model: AttentionRegression, batch: dict):
        out = model(batch.get("images"), batch["tokens"], batch["lengths"], batch.get("features"))
        return regression_loss(out, batch["target"], batch["target_cells"],
                               mcfg.lambda_squared_error, mcfg.lambda_penalty)
    return loss_fn


def init_box_of(train: pd.DataFrame) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in mean_normalised_box(train))  # type: ignore[return-value]


@dataclass
class Predictions:
    boxes: np.ndarray  # (N, 4) inclusive pixel boxes in each original image
    image_attention: np.ndarray | None  # (N, grid * grid)
    text_attention: np.ndarray | None  # (N, L)
    ms_per_query: float


@torch.no_grad()
def predict(model: AttentionRegression, examples: RegressionExamples, df: pd.DataFrame,
            batch_size: int = 256) -> Predictions:
    model.eval()
    device = next(model.parameters()).device
    boxes, image_att, text_att = [], [], []
    max_len = examples.tokens.shape[1]
    start = time.perf_counter()
    for lo in range(0, len(examples), batch_size):
        batch = examples.batch(torch.arange(lo, min(lo + batch_size, len(examples))))
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(batch.get("images"), batch["tokens"], batch["lengths"], batch.get("features"))
        boxes.append(out.box.cpu())
        if out.image_attention is not None:
            image_att.append(out.image_attention.cpu())
        if out.text_attention is not None:
            ta = out.text_attention.cpu()
            text_att.append(torch.nn.functional.pad(ta, (0, max_len - ta.shape[1])))
    seconds = time.perf_counter() - start
    norm = torch.cat(boxes).double().numpy() / model.image_size
    pixels = denormalise(norm, df["image_width"].to_numpy(np.float64), df["image_height"].to_numpy(np.float64))
    return Predictions(pixels, torch.cat(image_att).numpy() if image_att else None,
                       torch.cat(text_att).numpy() if text_att else None, 1000 * seconds / len(examples))


def accuracy_metrics(pred_boxes: np.ndarray, df: pd.DataFrame, prefix: str = "test") -> dict:
    """`<prefix>/accuracy` (IoU >= 0.5, inclusive), mean IoU, and accuracy per expression kind and per
    target size (`<prefix>/accuracy/small_target`, `.../large_target`: box under / at least 10% of the image)."""
    iou = paired_iou(pred_boxes, df[BOX_COLUMNS].to_numpy(np.float64).copy()).numpy()
    correct = iou >= 0.5
    metrics = {f"{prefix}/accuracy": float(correct.mean()), f"{prefix}/mean_iou": float(iou.mean()),
               f"{prefix}/queries": int(len(df))}
    kinds = df["kind"] if "kind" in df.columns else pd.Series(pd.NA, index=df.index)
    for kind in sorted(k for k in kinds.dropna().unique()):
        mask = (kinds == kind).to_numpy()
        metrics[f"{prefix}/accuracy/{kind}"] = float(correct[mask].mean())
    sizes = target_size_groups(df).to_numpy()
    for size in ("small", "large"):
        if (sizes == size).any():
            metrics[f"{prefix}/accuracy/{size}_target"] = float(correct[sizes == size].mean())
    return metrics


def localisation_metrics(image_attention: np.ndarray, df: pd.DataFrame, grid: int, prefix: str = "test"
                         ) -> tuple[dict, np.ndarray, np.ndarray]:
    """How often the image attention's peak cell lies in the ground-truth box, and the share of its
    mass there; overall and per target size. Returns the metrics and the per-query arrays."""
    inside = cells_in_box(grid, df[BOX_COLUMNS].to_numpy(np.float64), df["image_width"].to_numpy(),
                          df["image_height"].to_numpy())
    peak, mass = attention_localisation(image_attention, inside)
    metrics = {f"{prefix}/attention_peak_in_box": float(peak.mean()),
               f"{prefix}/attention_mass_in_box": float(mass.mean()),
               f"{prefix}/attention_dead_maps": int((np.asarray(image_attention).sum(1) <= 0).sum())}
    sizes = target_size_groups(df).to_numpy()
    for size in ("small", "large"):
        if (sizes == size).any():
            metrics[f"{prefix}/attention_peak_in_box/{size}_target"] = float(peak[sizes == size].mean())
            metrics[f"{prefix}/attention_mass_in_box/{size}_target"] = float(mass[sizes == size].mean())
    return metrics, peak, mass


# ---------------------------------------------------------------- stage wiring


def read_prepared(paths, dataset: str) -> tuple[pd.DataFrame, Vocab]:
    tuples_path, vocab_path = paths.tuples(dataset), paths.vocab(dataset)
    for p in (tuples_path, vocab_path):
        if not p.exists():
            raise DataError(p, f"missing; run prepare_referit for dataset '{dataset}' first")
    return pd.read_parquet(tuples_path), Vocab.load(vocab_path)


def split_rows(df: pd.DataFrame, split: str, path: Path) -> pd.DataFrame:
    part = df.loc[df["split"] == split].reset_index(drop=True)
    if part.empty:
        raise DataError(path, f"no '{split}' tuples")
    return part


def model_and_data(section: AttentionRegressionConfig, variant: str, paths, seed: int, split: str
                   ) -> tuple[AttentionRegression, RegressionExamples, pd.DataFrame, pd.DataFrame, Vocab]:
    """The variant's model (fresh init) and the split's examples; the init box comes from train."""
    from refexp.training.seed import seed_everything

    df, vocab = read_prepared(paths, section.dataset)
    train = split_rows(df, "train", paths.tuples(section.dataset))
    part = train if split == "train" else split_rows(df, split, paths.tuples(section.dataset))
    mcfg = section.variant_model(variant)
    # Seeded here too, because the weights are initialised before the engine seeds its loop.
    seed_everything(seed)
    model = build_model(section, variant, vocab, init_box_of(train), seed,
                        paths.backbone_weights(section.backbone, section.pretrained))
    examples = RegressionExamples.from_tuples(part, vocab, section.image_size, mcfg.feature_grid, paths.root,
                                              mcfg.use_image)
    if mcfg.use_image and section.freeze_backbone:
        examples.cache_features(model)
        if split == "train":
            model.calibrate(examples.features)
    return model, examples, part, train, vocab


def regression_run_key(section: AttentionRegressionConfig, variant: str, paths) -> str:
    """The engine's run_key: the prepared tuples and vocabulary, the initial backbone weights, the model
    code and every param of the variant's model, so a checkpoint left by other inputs is never resumed."""
    import sys

    import refexp.models.attention_regression
    import refexp.models.backbones
    import refexp.text.embeddings
    from refexp.training.engine import run_key

    weights = paths.backbone_weights(section.backbone, section.pretrained)
    files = [paths.tuples(section.dataset), paths.vocab(section.dataset), *([weights] if weights else [])]
    params = {**section.model_dump(include={"dataset", "backbone", "pretrained", "freeze_backbone", "image_size"}),
              "model": section.variant_model(variant).model_dump()}
    return run_key(files, [refexp.models.attention_regression, refexp.models.backbones, refexp.text.embeddings,
                           sys.modules[__name__]], params)


def train_variant(section: AttentionRegressionConfig, training, variant: str, paths, *, seed: int,
                  deterministic: bool = True, stage: str = "train_attention_regression", model_name: str = "attention_regression",
                  stop_after_steps: int | None = None, progress: bool = True) -> dict:
    from refexp.training.engine import fit

    model, examples, train, _, _ = model_and_data(section, variant, paths, seed, "train")
    metrics = fit(model, examples, make_loss_fn(section.variant_model(variant)), training,
                  paths.model_dir(model_name, variant), seed=seed, collate_fn=collate,
                  metrics_path=None, curve_path=paths.plots(stage, variant), deterministic=deterministic,
                  stop_after_steps=stop_after_steps, progress=progress,
                  run_key=regression_run_key(section, variant, paths))
    metrics.update({"train/tuples": len(examples), "train/empty_expressions": examples.empty_expressions,
                    "train/embedding_coverage": float(getattr(model, "embedding_coverage", 0.0))})
    return metrics


def load_trained(section: AttentionRegressionConfig, variant: str, paths, seed: int, split: str = "test",
                 model_name: str = "attention_regression"):
    from refexp.training.engine import CHECKPOINT_NAME, load_checkpoint

    model, examples, part, train, vocab = model_and_data(section, variant, paths, seed, split)
    ckpt = paths.model_dir(model_name, variant) / CHECKPOINT_NAME
    if not ckpt.exists():
        raise DataError(ckpt, f"missing; run train_attention_regression {variant} first")
    state = load_checkpoint(ckpt)
    model.load_state_dict(state["model"])
    return model, examples, part, train


def evaluate_variant(section: AttentionRegressionConfig, variant: str, paths, *, seed: int,
                     stage: str = "evaluate_attention_regression", model_name: str = "attention_regression"
                     ) -> tuple[dict, pd.DataFrame]:
    """Test metrics and a per-query predictions table (boxes, IoU, attention maps) for the report."""
    model, examples, test, _ = load_trained(section, variant, paths, seed, "test", model_name)
    pred = predict(model, examples, test, section.eval_batch_size)
    metrics = accuracy_metrics(pred.boxes, test)
    metrics["test/ms_per_query"] = pred.ms_per_query
    metrics["test/empty_expressions"] = examples.empty_expressions
    table = test[["image_id", "image_path", "image_width", "image_height", "region_id", "expression", "kind",
                  *BOX_COLUMNS]].copy()
    table[["pred_x1", "pred_y1", "pred_x2", "pred_y2"]] = pred.boxes
    table["iou"] = paired_iou(pred.boxes, test[BOX_COLUMNS].to_numpy(np.float64).copy()).numpy()
    table["tokens"] = test["tokens"]
    if pred.image_attention is not None:
        table["image_attention"] = list(pred.image_attention.astype(np.float32))
        located, table["attention_peak_in_box"], table["attention_mass_in_box"] = localisation_metrics(
            pred.image_attention, test, model.grid)
        metrics.update(located)
    if pred.text_attention is not None:
        table["text_attention"] = list(pred.text_attention.astype(np.float32))
    return metrics, table
