"""Recipe of the GRN paper's proposal detector (refexp.models.region_proposals): "we follow DenseCap and
pretrain a separate RPN on the training data" (Sec. 4.2).

- data: the training split's corpus images (corpus.parquet), each with all of its valid corpus regions as
  targets (DenseCap trains its localisation layer on every region box); the frozen backbone's maps are
  computed once (region_features.backbone_maps) and held in memory: with the backbone fixed this is exactly
  what running it at every step would give;
- model: RegionProposals over grn.rpn (anchor sizes/ratios, fg/bg IoU, sampled anchors per image and their
  positive fraction, pre-NMS top-n, NMS IoU, proposals_per_image kept);
- fit: engine.fit with training + grn.rpn.training, resumable (run_key: the corpus, the backbone weights, the
  code and the rpn params that shape training); the trained weights alone go to model.pt;
- evaluation on the test split: the proposal recall of the corpus regions, the share of ground-truth regions
  with a proposal of IoU >= t (t = 0.5, 0.7; inclusive boxes on the original image), beside the same recall
  of a uniform grid of the anchor shapes with as many boxes per image (the baseline: what the anchors' shapes
  alone give, without learning) and of every anchor (what the anchor set covers before regression).
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
from torch.utils.data import Dataset

from refexp.artifacts import save_torch
from refexp.config import Config, GrnConfig
from refexp.data.skips import DataError
from refexp.metrics.boxes import box_iou_np
from refexp.models.backbones import BACKBONE_CHANNELS, Backbone
from refexp.models.region_proposals import RegionProposals
from refexp.paths import Paths
from refexp.training import region_features
from refexp.training.engine import fit, pick_device, run_key
from refexp.training.region_features import Corpus, backbone_maps, frozen_backbone, input_boxes, to_original
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

STAGE = "train_region_proposals"
MODEL = "region_proposals"
MODEL_FILE = "model.pt"  # the trained weights alone (the checkpoint also holds optimizer state and timings)
RECALL_IOUS = (0.5, 0.7)


def model_dir(paths: Paths, dataset: str) -> Path:
    return paths.model_dir(MODEL, dataset)


# ---------------------------------------------------------------- data


@dataclass
class MapTargets(Dataset):
    """One item per training image: its cached backbone map and its regions on the input."""

    maps: torch.Tensor  # (N, C, h, w) float32
    boxes: list[torch.Tensor]  # N tensors (G_i, 4), continuous boxes on the S x S input

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> dict:
        return {"map": self.maps[i], "boxes": self.boxes[i]}


def collate(items: list[dict]) -> dict:
    return {"maps": torch.stack([it["map"] for it in items]),  # (B, C, h, w)
            "boxes": [it["boxes"] for it in items]}  # B x (G_i, 4)


def loss_fn(model: RegionProposals, batch: dict):
    losses = model.loss(batch["maps"], batch["boxes"])
    total = losses["loss_objectness"] + losses["loss_rpn_box_reg"]
    return total, {"loss/objectness": float(losses["loss_objectness"].detach()),
                   "loss/box_reg": float(losses["loss_rpn_box_reg"].detach())}


def cache_maps(backbone: Backbone, corpus: Corpus, images: np.ndarray, root: Path, size: int) -> torch.Tensor:
    """(N, C, h, w) float32 on the CPU: the frozen backbone's map of each of those corpus images."""
    maps = torch.cat([m.cpu() for _, m in backbone_maps(backbone, corpus, images, root, size)])
    log.info("cached %d backbone maps %s (%.1f MB)", len(maps), tuple(maps.shape[1:]), maps.numel() * 4 / 1e6)
    return maps


# ---------------------------------------------------------------- model


def build(grn: GrnConfig, channels: int) -> RegionProposals:
    return RegionProposals.from_config(grn.rpn, channels, grn.image_size)


def rpn_run_key(cfg: Config, files: list[Path]) -> str:
    import refexp.data.letterbox
    import refexp.models.backbones
    import refexp.models.region_proposals

    g = cfg.grn
    params = {**g.model_dump(include={"dataset", "backbone", "pretrained", "image_size"}),
              "rpn": g.rpn.model_dump(include={"anchor_sizes", "aspect_ratios", "fg_iou", "bg_iou",
                                               "anchors_per_image", "positive_fraction"})}
    return run_key(files, [refexp.models.region_proposals, refexp.models.backbones, refexp.data.letterbox,
                           region_features, sys.modules[__name__]], params)


def train(cfg: Config, paths: Paths, dataset: str, progress: bool = True, stop_after_steps: int | None = None) -> dict:
    """Train the RPN on the training split's images (resumable), save model.pt, then evaluate on test."""
    g = cfg.grn
    corpus = Corpus.read(paths, dataset)
    backbone = frozen_backbone(g, paths, cfg.run.seed).to(pick_device())
    images = corpus.image_indices(("train",))
    if not len(images):
        raise DataError(corpus.source, "no train images: the RPN trains on the training split")
    boxes = [input_boxes(corpus, int(i), corpus.rows_of(int(i)), g.image_size) for i in images]
    dataset_ = MapTargets(cache_maps(backbone, corpus, images, paths.root, g.image_size), boxes)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model = build(g, backbone.channels)
    weights = paths.backbone_weights(g.backbone, g.pretrained)
    files = [region_features.corpus_path(paths, dataset), *([weights] if weights else [])]
    training = cfg.training.merged(g.rpn.training, "grn.rpn.training")
    metrics = fit(model, dataset_, loss_fn, training, model_dir(paths, dataset), seed=cfg.run.seed,
                  collate_fn=collate, curve_path=paths.plots(STAGE, dataset), deterministic=cfg.run.deterministic,
                  stop_after_steps=stop_after_steps, progress=progress, run_key=rpn_run_key(cfg, files))
    metrics.update({"train/images": len(images), "train/regions": int(sum(len(b) for b in boxes)),
                    "regions": len(corpus.frame), "regions/valid": int(corpus.valid.sum()),
                    **corpus.skips.as_metrics("skipped/")})
    if metrics.get("train/stopped_early"):
        return metrics
    # The two losses of the last logged step (the curve fit just wrote; train/loss is its log window's mean).
    last = pd.read_csv(paths.plots(STAGE, dataset)).iloc[-1]
    metrics.update({"train/loss_objectness": float(last["loss/objectness"]),
                    "train/loss_box_reg": float(last["loss/box_reg"])})
    save_torch(model.state_dict(), model_dir(paths, dataset) / MODEL_FILE)
    metrics.update(evaluate(model, backbone, corpus, g, paths.root, "test"))
    metrics.update(corpus.defects.as_metrics("kept_with_defect/"))
    return metrics


def load_trained(cfg: Config, paths: Paths, dataset: str) -> RegionProposals:
    """The trained RPN (model.pt), in eval mode on the device."""
    weights = model_dir(paths, dataset) / MODEL_FILE
    if not weights.exists():
        raise DataError(weights, f"missing; run train_region_proposals {dataset} first")
    model = build(cfg.grn, BACKBONE_CHANNELS[cfg.grn.backbone])
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval().to(pick_device())


# ---------------------------------------------------------------- evaluation


def grid_boxes(model: RegionProposals, n: int) -> torch.Tensor:
    """(n, 4) the baseline: every anchor shape at each centre of a uniform g x g grid over the input, g the
    smallest with g^2 * A >= n, thinned to n boxes evenly over that (centre-major) list."""
    shapes = model.anchor_shapes()  # (A, 4) zero-centred
    g = math.ceil(math.sqrt(n / len(shapes)))
    centres = (torch.arange(g, dtype=torch.float32) + 0.5) * model.image_size / g
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    shifts = torch.stack([cx, cy, cx, cy], -1).reshape(-1, 1, 4)  # (g*g, 1, 4)
    every = (shifts + shapes.view(1, -1, 4)).reshape(-1, 4)  # (g*g*A, 4)
    keep = np.unique(np.linspace(0, len(every) - 1, n).round().astype(np.int64))
    return every[torch.from_numpy(keep)]


def proposal_recall(candidates: list[np.ndarray], regions: list[np.ndarray], iou: float) -> float:
    """Share of the regions (per image, inclusive boxes) with a candidate of their image at IoU >= iou."""
    hits = total = 0
    for cand, gt in zip(candidates, regions):
        total += len(gt)
        if len(gt) and len(cand):
            hits += int((box_iou_np(gt, cand).max(1) >= iou).sum())
    return hits / total if total else float("nan")


@torch.no_grad()
def evaluate(model: RegionProposals, backbone: Backbone, corpus: Corpus, g: GrnConfig, root: Path,
             split: str = "test") -> dict:
    """{split}/proposal_recall_at_{t}, the grid baseline's and all anchors' recall, proposals per image."""
    images = corpus.image_indices((split,))
    if not len(images):
        log.warning("no %s images: no proposal recall", split)
        return {f"{split}/images": 0}
    model.eval()
    device = next(model.parameters()).device
    grid = grid_boxes(model, g.rpn.proposals_per_image).numpy()
    found: dict[str, list[np.ndarray]] = {"proposal": [], "grid": [], "all_anchors": []}
    regions: list[np.ndarray] = []
    for part, maps in backbone_maps(backbone, corpus, images, root, g.image_size):
        boxes, _ = model(maps.to(device))
        anchors = model.anchors(maps[:1])[0].cpu().numpy()
        for i, b in zip(part, boxes):
            letterbox = corpus.letterbox(int(i), g.image_size)
            for name, cand in (("proposal", b.cpu().numpy()), ("grid", grid), ("all_anchors", anchors)):
                original, kept = to_original(letterbox, cand)
                found[name].append(original[kept])
            regions.append(corpus.boxes(corpus.rows_of(int(i))))
    metrics: dict = {f"{split}/images": len(images), f"{split}/regions": int(sum(map(len, regions))),
                     f"{split}/proposals_per_image": float(np.mean([len(p) for p in found["proposal"]])),
                     f"{split}/grid_boxes_per_image": float(np.mean([len(p) for p in found["grid"]]))}
    for t in RECALL_IOUS:
        for name, cand in found.items():
            metrics[f"{split}/{name}_recall_at_{t}"] = proposal_recall(cand, regions, t)
    return metrics
