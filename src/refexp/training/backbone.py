"""Pretraining the `tiny` backbone once, in ImageNet's role (the pretrain_backbone stage).

Data: the COCO train2014 images of `pretrain_backbone.dataset` (prepare_coco's instances table, split
"train"), never val2014, where the synthetic world puts its val and test scenes. A seeded
`holdout_fraction` of those images is held out to measure the backbone's own accuracy; val2014 is
measured too, but nothing is chosen on it.

Targets (refexp.models.backbone_pretraining.DensePretrainer): each pixel's category (background or
the COCO category of the instance mask covering it, from the masks' RLE, decoded once) and its RGB.
Each training item is a seeded random square crop (a `min_crop`..1 share of the image side, flipped
left-right with probability 1/2) resized to `crop_size`, so objects appear at many scales: the SCRC
crops and the regression's whole images both see the CNN at scales it was trained on.

`pretrain(cfg, paths)` -> models/backbone/<backbone>/backbone.pt (the body's state dict, loaded by
refexp.models.backbones.build_backbone for `pretrained: true`) and its metrics: pixel accuracy, mean
IoU over the classes, per-class IoU, colour error, and the all-background baseline, on the held-out
images and on val2014.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from refexp.artifacts import save_torch
from refexp.config import Config, PretrainBackboneConfig
from refexp.data.coco import decode_rle
from refexp.data.skips import DataError
from refexp.data.torch_datasets import ImageStore
from refexp.models.backbone_pretraining import DensePretrainer
from refexp.models.backbones import build_backbone
from refexp.paths import Paths
from refexp.training.engine import fit, run_key
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

STAGE = "pretrain_backbone"
WEIGHTS_FILE = "backbone.pt"
BACKGROUND = "background"


# ---------------------------------------------------------------- data


def read_instances(paths: Paths, dataset: str) -> pd.DataFrame:
    path = paths.prepared(dataset) / "instances.parquet"
    if not path.exists():
        raise DataError(path, f"missing; run prepare_coco for dataset '{dataset}' first")
    table = pd.read_parquet(path)
    if table["image_path"].isna().all():
        raise DataError(path, "no image paths (an annotation-only COCO copy): the backbone needs images")
    return table


def split_images(instances: pd.DataFrame, holdout_fraction: float, seed: int, max_images: int | None
                 ) -> tuple[list[str], list[str], list[str]]:
    """(train, held-out, val2014) image paths: a seeded share of the train2014 images is held out."""
    train = sorted(instances.loc[(instances["split"] == "train") & instances["image_path"].notna(), "image_path"]
                   .astype(str).unique())
    val = sorted(instances.loc[(instances["split"] == "val") & instances["image_path"].notna(), "image_path"]
                 .astype(str).unique())
    if not train:
        raise DataError("instances.parquet", "no train2014 images with instances to pretrain on")
    order = np.random.default_rng([seed, 23]).permutation(len(train))
    n_hold = min(len(train) - 1, math.ceil(holdout_fraction * len(train))) if holdout_fraction > 0 else 0
    held = sorted(train[i] for i in order[:n_hold])
    kept = [train[i] for i in order[n_hold:]]
    if max_images is not None:
        kept = kept[:max_images]
    return sorted(kept), held, val


def class_names(instances: pd.DataFrame) -> list[str]:
    """background, then the categories by category_id (train2014 categories; COCO ids have gaps)."""
    cats = instances[["category_id", "category"]].drop_duplicates().sort_values("category_id")
    return [BACKGROUND, *cats["category"].astype(str)]


def label_maps(instances: pd.DataFrame, image_paths: list[str], size: int, names: list[str]) -> torch.Tensor:
    """(N, size, size) uint8 class index per pixel: 0 background, else the covering instance's category
    (later annotations drawn over earlier ones; COCO masks of one image rarely overlap)."""
    index = {n: i for i, n in enumerate(names)}
    if len(names) > 255:
        raise ValueError(f"{len(names)} classes do not fit a uint8 label map")
    out = torch.zeros(len(image_paths), size, size, dtype=torch.uint8)
    by_image = dict(tuple(instances[instances["image_path"].notna()].groupby(instances["image_path"].astype(str))))
    for row, path in enumerate(image_paths):
        anns = by_image.get(path)
        if anns is None:
            continue
        height, width = int(anns["image_height"].iloc[0]), int(anns["image_width"].iloc[0])
        label = np.zeros((height, width), dtype=np.uint8)
        for ann in anns.itertuples(index=False):
            if isinstance(ann.mask_rle, str):
                label[decode_rle(ann.mask_rle, height, width)] = index[str(ann.category)]
        resized = F.interpolate(torch.from_numpy(label)[None, None].float(), size=(size, size), mode="nearest-exact")
        out[row] = resized[0, 0].to(torch.uint8)
    return out


@dataclass
class DenseExamples(Dataset):
    """Images and their label maps in memory; items are seeded random crops (torch's RNG, which the
    engine seeds and checkpoints, so a resumed run draws the same crops)."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N, S, S) uint8
    crop_size: int
    min_crop: float

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        size = self.images.shape[-1]
        side = int(round(size * (self.min_crop + (1 - self.min_crop) * float(torch.rand(())))))
        side = max(2, min(size, side))
        x0 = int(torch.randint(0, size - side + 1, ()))
        y0 = int(torch.randint(0, size - side + 1, ()))
        image = self.images[i, :, y0:y0 + side, x0:x0 + side].float()[None] / 255.0  # (1, 3, s, s)
        label = self.labels[i, y0:y0 + side, x0:x0 + side][None, None].float()  # (1, 1, s, s)
        image = F.interpolate(image, size=self.crop_size, mode="bilinear", align_corners=False, antialias=True)[0]
        # nearest-exact samples pixel centres, as the bilinear image resize does (plain nearest is off by
        # up to half a pixel).
        label = F.interpolate(label, size=self.crop_size, mode="nearest-exact")[0, 0].long()
        if float(torch.rand(())) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return {"images": image, "labels": label}


def class_weights(labels: torch.Tensor, n_classes: int, power: float) -> torch.Tensor:
    """(K,) cross-entropy weights freq^-power over the training pixels, mean 1 over the pixels:
    objects cover a few percent of an image, so unweighted the loss is mostly background."""
    freq = torch.bincount(labels.flatten().long(), minlength=n_classes).double()
    weights = (freq / freq.sum()).clamp(min=1e-6) ** -power
    weights = weights / (weights * freq).sum() * freq.sum()
    return weights.float()


def dense_loss(colour_weight: float, weights: torch.Tensor | None = None):
    def loss_fn(model: DensePretrainer, batch: dict) -> tuple[torch.Tensor, dict]:
        logits, colour = model(batch["images"])
        w = weights.to(logits.device) if weights is not None else None
        category = F.cross_entropy(logits.float(), batch["labels"], weight=w)
        # Unweighted: weighting it like the categories (objects up) lowered how well a text-conditioned
        # attention read the features (the stuff regions' texture matters as much as object colour).
        colour_error = F.mse_loss(colour.float(), batch["images"])
        return category + colour_weight * colour_error, {"loss/category": float(category.detach()),
                                                         "loss/colour": float(colour_error.detach())}
    return loss_fn


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def dense_metrics(model: DensePretrainer, images: torch.Tensor, labels: torch.Tensor, names: list[str],
                  prefix: str, batch_size: int = 64) -> dict:
    """Whole images at the store size: pixel accuracy, mean IoU over classes present in the truth,
    per-class IoU, colour mean absolute error (0-255), and the all-background pixel accuracy."""
    if len(images) == 0:
        return {}
    model.eval()
    k = len(names)
    confusion = torch.zeros(k, k, dtype=torch.long)
    colour_abs, pixels = 0.0, 0
    for lo in range(0, len(images), batch_size):
        x = images[lo:lo + batch_size].float() / 255.0
        y = labels[lo:lo + batch_size].long()
        logits, colour = model(x)
        pred = logits.argmax(1)
        confusion += torch.bincount(y.flatten() * k + pred.flatten(), minlength=k * k).reshape(k, k)
        colour_abs += float((colour - x).abs().sum()) * 255.0 / 3
        pixels += y.numel()
    tp = confusion.diag().double()
    truth, predicted = confusion.sum(1).double(), confusion.sum(0).double()
    iou = tp / (truth + predicted - tp).clamp(min=1)
    present = truth > 0
    out = {f"{prefix}/pixel_accuracy": float(tp.sum() / confusion.sum()),
           f"{prefix}/mean_iou": float(iou[present].mean()),
           f"{prefix}/mean_iou_categories": float(iou[1:][present[1:]].mean()) if present[1:].any() else float("nan"),
           f"{prefix}/all_background_pixel_accuracy": float(truth[0] / confusion.sum()),
           f"{prefix}/colour_mae": colour_abs / pixels, f"{prefix}/images": len(images)}
    out.update({f"{prefix}/iou/{name}": float(iou[i]) for i, name in enumerate(names) if present[i]})
    return out


# ---------------------------------------------------------------- stage


def backbone_run_key(section: PretrainBackboneConfig, *files: Path) -> str:
    """The engine's run_key: the training data, this recipe's code and its params (besides training)."""
    import refexp.models.backbone_pretraining
    import refexp.models.backbones

    return run_key(files, [refexp.models.backbones, refexp.models.backbone_pretraining, sys.modules[__name__]],
                   section.model_dump(exclude={"training"}))


def save_backbone(model: DensePretrainer, path: Path) -> None:
    save_torch(model.backbone.body.state_dict(), path)


def build(section: PretrainBackboneConfig, n_classes: int) -> DensePretrainer:
    return DensePretrainer(build_backbone(section.backbone, pretrained=False), n_classes)


def pretrain(cfg: Config, paths: Paths, progress: bool = True) -> dict:
    section = cfg.pretrain_backbone
    instances = read_instances(paths, section.dataset)
    train, held, val = split_images(instances, section.holdout_fraction, cfg.run.seed, section.max_images)
    names = class_names(instances)
    seed_everything(cfg.run.seed, cfg.run.deterministic)

    def store(image_paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not image_paths:
            return torch.zeros(0, 3, section.image_size, section.image_size, dtype=torch.uint8), \
                torch.zeros(0, section.image_size, section.image_size, dtype=torch.uint8)
        return (ImageStore(image_paths, paths.root, section.image_size).images,
                label_maps(instances, image_paths, section.image_size, names))

    train_images, train_labels = store(train)
    model = build(section, len(names))
    out_dir = paths.model_dir("backbone", section.backbone)
    data = DenseExamples(train_images, train_labels, section.crop_size, section.min_crop)
    tcfg = cfg.training.merged(section.training)
    weights = class_weights(train_labels, len(names), section.class_balance)
    metrics = fit(model, data, dense_loss(section.colour_weight, weights), tcfg, out_dir, seed=cfg.run.seed,
                  deterministic=cfg.run.deterministic, progress=progress, curve_path=paths.plots(STAGE, section.backbone),
                  run_key=backbone_run_key(section, paths.prepared(section.dataset) / "instances.parquet"))
    save_backbone(model, out_dir / WEIGHTS_FILE)
    metrics.update({"train/images": len(train), "classes": len(names)})
    metrics.update(dense_metrics(model, train_images, train_labels, names, "train"))
    for prefix, image_paths in (("heldout", held), ("val2014", val)):
        metrics.update(dense_metrics(model, *store(image_paths), names, prefix))
    return metrics
