"""Frozen region features of the GRN paper (Sec. 3.1: "we adopt ResNet-18 without the last layer to get the
visual feature vector X in R^{W x H x C}" for the query region and every candidate).

- The corpus: data/build_region_benchmark/<dataset>/corpus.parquet, one row per region (inclusive pixel boxes
  x1..y2 on the original image), grouped into images in order of first appearance (`Corpus`).
- A box outside its image (any corner beyond 0..W-1 / 0..H-1) or of zero area (x2 < x1 or y2 < y1, or not
  finite) is a counted skip (`skipped/box_outside_image`, `skipped/box_zero_area`): its features row stays
  zero and `valid` is False. An image that cannot be read is a DataError naming the file; one whose size
  differs from the corpus's image_width/height is resized to it and counted
  (`kept_with_defect/image_size_mismatch`), since the boxes are in the corpus's frame.
- The backbone runs once per image, letterboxed to grn.image_size (data/letterbox.py), in eval mode without
  gradients, in batches of `IMAGE_BATCH`; each box is mapped onto the input (`to_input`, Letterbox.boxes
  then exclusive ends) and pooled with `torchvision.ops.roi_align(spatial_scale=1/stride, aligned=True,
  sampling_ratio=-1)` to k x k = grn.region_map_size: (N, C, k, k). With aligned=True a box covering whole
  map cells samples each cell at its centre, so a k x k-cell box gives exactly those cells (tested).
- Proposals come back from the input to the original image with `to_original` (the inverse of to_input,
  clipped to the image; a proposal lying wholly in the letterbox padding is dropped and counted).

`extract(...)` writes data/extract_region_features/<dataset>/ (atomically, one folder):
- regions.pt    {"features": (N_gt, C, k, k) float16, corpus.parquet row order; "valid": (N_gt,) bool;
                 "boxes": (N_gt, 4) float32 (the corpus's x1, y1, x2, y2); "meta": {...}}
- proposals.parquet  one row per proposal, grouped by image in corpus order, best score first: image_id,
                 proposal (rank among its image's proposals, 0 = best), x1, y1, x2, y2 (float, inclusive pixels of the
                 original image), score (objectness probability), split, best_iou (the highest IoU with a
                 valid corpus region of its image, 0 when none), best_row (that region's corpus row, -1)
- proposals.pt  {"features": (N_prop, C, k, k) float16, proposals.parquet row order; "meta": {...}}
"meta" = {"backbone", "pretrained", "image_size", "region_map_size", "channels", "stride"}; load both .pt files
with torch.load(weights_only=True). The backbone is built under run.seed, so a random one (`pretrained: false`)
is the same network in train_region_proposals and here.

Size: every proposal of a test image is kept (the RPN setting's candidates); of a train or val image only
those GRN training in the RPN setting reads, its positives (IoU > train_positive_iou with a corpus region of
the image; the negatives are other queries' positives in the batch). The rest is counted in the metrics.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.ops import roi_align

from refexp.artifacts import atomic_path, save_torch
from refexp.data.letterbox import Letterbox
from refexp.data.skips import DataError, SkipCounter
from refexp.metrics.boxes import box_iou_np
from refexp.models.backbones import Backbone, build_backbone
from refexp.paths import Paths

log = logging.getLogger(__name__)

STAGE = "extract_region_features"
IMAGE_BATCH = 32  # images per backbone pass
CORPUS_COLUMNS = ("dataset", "image_id", "image_path", "image_width", "image_height", "region_id",
                  "x1", "y1", "x2", "y2", "expression", "split", "set_id", "role")
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]
REGIONS, PROPOSALS, PROPOSAL_FEATURES = "regions.pt", "proposals.parquet", "proposals.pt"
# proposer(maps (B, C, h, w)) -> (B tensors (P_i, 4) continuous boxes on the input, B tensors (P_i,) scores)
Proposer = Callable[[torch.Tensor], tuple[list[torch.Tensor], list[torch.Tensor]]]


def corpus_path(paths: Paths, dataset: str) -> Path:
    return paths.stage_dir("build_region_benchmark", dataset) / "corpus.parquet"


# ---------------------------------------------------------------- the corpus


def check_boxes(frame: pd.DataFrame, source: str | Path, skips: SkipCounter) -> np.ndarray:
    """(N,) bool: the rows whose box lies inside its image with a positive area; the others counted."""
    b = frame[BOX_COLUMNS].to_numpy(dtype=np.float64)
    w = frame["image_width"].to_numpy(dtype=np.float64)
    h = frame["image_height"].to_numpy(dtype=np.float64)
    zero = ~np.isfinite(b).all(1) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    with np.errstate(invalid="ignore"):
        outside = ~zero & ((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w - 1) | (b[:, 3] > h - 1))
    ids = frame["region_id"].astype(str).to_numpy()
    for reason, bad in (("box_zero_area", zero), ("box_outside_image", outside)):
        for rid in ids[bad]:
            skips.add(reason, source, rid)
    skips.read("regions", len(frame))
    return ~(zero | outside)


@dataclass
class Corpus:
    """corpus.parquet, its images (first-appearance order) and which boxes are usable."""

    frame: pd.DataFrame
    source: Path
    images: pd.DataFrame  # one row per image: image_id, image_path, image_width, image_height, split
    image_of_row: np.ndarray  # (N,) row -> index into images
    valid: np.ndarray  # (N,) bool
    skips: SkipCounter = field(default_factory=SkipCounter)
    defects: SkipCounter = field(default_factory=lambda: SkipCounter(kind="kept with a defect"))

    @classmethod
    def read(cls, paths: Paths, dataset: str) -> "Corpus":
        path = corpus_path(paths, dataset)
        if not path.exists():
            raise DataError(path, f"missing; run build_region_benchmark {dataset} first")
        return cls.from_frame(pd.read_parquet(path), path)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str | Path = "corpus.parquet") -> "Corpus":
        missing = [c for c in CORPUS_COLUMNS if c not in frame]
        if missing:
            raise DataError(source, f"lacks columns {missing} (a build_region_benchmark corpus has "
                            f"{list(CORPUS_COLUMNS)})")
        if frame.empty:
            raise DataError(source, "has no regions")
        frame = frame.reset_index(drop=True)
        frame["image_id"] = frame["image_id"].astype(str)
        per_image = ["image_path", "image_width", "image_height", "split"]
        images = frame.drop_duplicates("image_id")[["image_id", *per_image]].reset_index(drop=True)
        conflicting = frame.groupby("image_id", sort=False)[per_image].nunique(dropna=False).max(axis=1) > 1
        if conflicting.any():
            raise DataError(source, "rows of one image disagree on image_path, size or split",
                            record=conflicting[conflicting].index[0])
        index = pd.Series(np.arange(len(images)), index=images["image_id"])
        skips = SkipCounter()
        valid = check_boxes(frame, source, skips)
        return cls(frame, Path(source), images, index.loc[frame["image_id"]].to_numpy(), valid, skips)

    def __post_init__(self) -> None:
        self._boxes = self.frame[BOX_COLUMNS].to_numpy(dtype=np.float64)  # (N, 4)
        order = np.argsort(self.image_of_row, kind="stable")
        starts = np.searchsorted(self.image_of_row[order], np.arange(len(self.images) + 1))
        self._rows = [order[a:b] for a, b in zip(starts[:-1], starts[1:])]  # per image, its rows in corpus order

    def rows_of(self, image: int, valid_only: bool = True) -> np.ndarray:
        rows = self._rows[image]
        return rows[self.valid[rows]] if valid_only else rows

    def boxes(self, rows: np.ndarray) -> np.ndarray:
        """(K, 4) float64 inclusive boxes of those rows, on the original image."""
        return self._boxes[rows]

    def letterbox(self, image: int, size: int) -> Letterbox:
        r = self.images.iloc[image]
        try:
            return Letterbox.fit(int(r.image_width), int(r.image_height), size, size)
        except ValueError as err:
            raise DataError(self.source, str(err), record=r.image_id) from None

    def image_indices(self, splits: tuple[str, ...] | None = None) -> np.ndarray:
        keep = np.ones(len(self.images), bool) if splits is None else self.images["split"].isin(splits).to_numpy()
        return np.flatnonzero(keep)


# ---------------------------------------------------------------- boxes on the input and back


def to_input(box: Letterbox, boxes: np.ndarray) -> np.ndarray:
    """(K, 4) inclusive boxes on the original image -> (K, 4) float32 continuous boxes on the letterboxed
    input (torchvision's and roi_align's convention: a pixel i spans [i, i + 1))."""
    out = box.boxes(boxes)
    out[:, 2:] += 1
    return out


def to_original(box: Letterbox, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) continuous boxes on the input -> ((K, 4) float64 inclusive boxes on the original image, clipped
    to it; (K,) bool, False where nothing of the box is left inside the image). Inverse of `to_input`."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = box.resized_w / box.width, box.resized_h / box.height
    x1 = np.clip((b[:, 0] - box.pad_x) / sx, 0, box.width)
    y1 = np.clip((b[:, 1] - box.pad_y) / sy, 0, box.height)
    x2 = np.clip((b[:, 2] - box.pad_x) / sx, 0, box.width)
    y2 = np.clip((b[:, 3] - box.pad_y) / sy, 0, box.height)
    kept = (x2 > x1) & (y2 > y1)
    out = np.stack([x1, y1, np.maximum(x1, x2 - 1), np.maximum(y1, y2 - 1)], 1)
    return np.minimum(out, [box.width - 1, box.height - 1, box.width - 1, box.height - 1]), kept


# ---------------------------------------------------------------- the frozen backbone


def frozen_backbone(grn, paths: Paths, seed: int) -> Backbone:
    """grn.backbone with its pretrained weights, in eval mode, without gradients. Built under its own seed:
    with `pretrained: false` its random weights are then the same in every stage that builds it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_backbone(grn.backbone, grn.pretrained, paths.backbone_weights(grn.backbone, grn.pretrained))
    if grn.image_size % net.stride:
        raise DataError("params.yaml", f"grn.image_size {grn.image_size} is not a multiple of the "
                        f"{grn.backbone} stride {net.stride}")
    return net.eval().requires_grad_(False)


def load_letterboxed(corpus: Corpus, image: int, root: Path, size: int) -> np.ndarray:
    """(S, S, 3) uint8: the image letterboxed to the input; DataError naming the file if unreadable."""
    r = corpus.images.iloc[image]
    path = Path(root) / str(r.image_path)
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if rgb.size != (int(r.image_width), int(r.image_height)):
                corpus.defects.add("image_size_mismatch", path, r.image_id)
                rgb = rgb.resize((int(r.image_width), int(r.image_height)), Image.BILINEAR)
            array = np.asarray(rgb)
    except OSError as err:
        raise DataError(path, f"cannot read image ({type(err).__name__}: {err})", record=r.image_id) from None
    return corpus.letterbox(image, size).image(array)


@torch.no_grad()
def backbone_maps(backbone: Backbone, corpus: Corpus, images: np.ndarray, root: Path, size: int,
                  batch_size: int = IMAGE_BATCH) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Per batch of corpus images: (their indices, maps (b, C, S/stride, S/stride) float32 on the backbone's
    device), one backbone pass per image."""
    device = next(backbone.parameters()).device
    for start in range(0, len(images), batch_size):
        part = np.asarray(images[start:start + batch_size])
        pixels = np.stack([load_letterboxed(corpus, int(i), root, size) for i in part])  # (b, S, S, 3)
        batch = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float().div_(255.0)  # (b, 3, S, S)
        yield part, backbone(batch).float()


def roi_features(maps: torch.Tensor, boxes: list[torch.Tensor], stride: int, k: int) -> torch.Tensor:
    """maps (B, C, h, w); boxes: B tensors (K_i, 4) continuous boxes on the input -> (sum K_i, C, k, k)."""
    boxes = [b.to(device=maps.device, dtype=maps.dtype) for b in boxes]
    return roi_align(maps, boxes, output_size=(k, k), spatial_scale=1.0 / stride, sampling_ratio=-1, aligned=True)


def input_boxes(corpus: Corpus, image: int, rows: np.ndarray, size: int) -> torch.Tensor:
    """(K, 4) continuous input boxes of those corpus rows of one image."""
    return torch.from_numpy(to_input(corpus.letterbox(image, size), corpus.boxes(rows)))


# ---------------------------------------------------------------- the stage's body


def best_match(proposals: np.ndarray, regions: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per proposal (inclusive boxes), its highest IoU with the image's regions (float32, 0 when there are
    none) and that region's corpus row (int64, -1 when there are none)."""
    if not len(regions):
        return np.zeros(len(proposals), np.float32), np.full(len(proposals), -1, np.int64)
    iou = box_iou_np(proposals, regions)  # (P, G)
    return iou.max(1).astype(np.float32), np.asarray(rows, np.int64)[iou.argmax(1)]


def _meta(grn, backbone: Backbone) -> dict:
    return {"backbone": grn.backbone, "pretrained": bool(grn.pretrained), "image_size": int(grn.image_size),
            "region_map_size": int(grn.region_map_size), "channels": int(backbone.channels),
            "stride": int(backbone.stride)}


def extract(grn, paths: Paths, dataset: str, proposer: Proposer, seed: int, batch_size: int = IMAGE_BATCH) -> dict:
    """One backbone pass over every corpus image: region features, proposals and their features (module doc)."""
    from refexp.training.engine import pick_device

    tick = time.perf_counter()
    corpus = Corpus.read(paths, dataset)
    backbone = frozen_backbone(grn, paths, seed).to(pick_device())
    size, k, stride, channels = grn.image_size, grn.region_map_size, backbone.stride, backbone.channels
    region_features = torch.zeros((len(corpus.frame), channels, k, k), dtype=torch.float16)
    proposal_features: list[torch.Tensor] = []
    tables: list[pd.DataFrame] = []
    dropped_in_padding = pruned = 0
    for part, maps in backbone_maps(backbone, corpus, np.arange(len(corpus.images)), paths.root, size, batch_size):
        rows = [corpus.rows_of(int(i)) for i in part]
        gt = roi_features(maps, [input_boxes(corpus, int(i), r, size) for i, r in zip(part, rows)], stride, k)
        region_features[torch.from_numpy(np.concatenate(rows))] = gt.half().cpu()
        boxes, scores = proposer(maps)
        kept_input = []
        for i, r, b, s in zip(part, rows, boxes, scores):
            letterbox = corpus.letterbox(int(i), size)
            original, kept = to_original(letterbox, b.detach().cpu().numpy())
            dropped_in_padding += int((~kept).sum())
            original, s = original[kept], s.detach().cpu().numpy()[kept]
            best_iou, best_row = best_match(original, corpus.boxes(r), r)
            image = corpus.images.iloc[int(i)]
            rank = np.arange(len(original), dtype=np.int64)
            if image.split != "test":  # train/val: only what GRN training in the RPN setting reads (its positives)
                needed = best_iou > grn.train_positive_iou
                pruned += int((~needed).sum())
                original, s, best_iou, best_row, rank = (a[needed] for a in (original, s, best_iou, best_row, rank))
            tables.append(pd.DataFrame({
                "image_id": image.image_id, "proposal": rank,
                **{c: original[:, j] for j, c in enumerate(BOX_COLUMNS)}, "score": s.astype(np.float32),
                "split": image.split, "best_iou": best_iou, "best_row": best_row}))
            kept_input.append(torch.from_numpy(to_input(letterbox, original)))
        proposal_features.append(roi_features(maps, kept_input, stride, k).half().cpu())
    proposals = pd.concat(tables, ignore_index=True)
    proposals["image_id"] = proposals["image_id"].astype("string")
    proposals["split"] = proposals["split"].astype("string")
    features = torch.cat(proposal_features)
    meta = _meta(grn, backbone)
    out = paths.stage_dir(STAGE, dataset)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        save_torch({"features": region_features, "valid": torch.from_numpy(corpus.valid.copy()),
                    "boxes": torch.from_numpy(corpus.boxes(np.arange(len(corpus.frame))).astype(np.float32)),
                    "meta": meta}, tmp / REGIONS)
        proposals.to_parquet(tmp / PROPOSALS, index=False)
        save_torch({"features": features, "meta": meta}, tmp / PROPOSAL_FEATURES)
        sizes = {name: (tmp / name).stat().st_size / 1e6 for name in (REGIONS, PROPOSALS, PROPOSAL_FEATURES)}
    metrics: dict = {
        "images": len(corpus.images), "regions": len(corpus.frame), "regions/valid": int(corpus.valid.sum()),
        "proposals": len(proposals), "proposals/per_image": len(proposals) / len(corpus.images),
        "proposals/dropped_in_padding": dropped_in_padding,
        "proposals/not_kept_train_val_below_train_positive_iou": pruned,
        "size/regions_mb": round(sizes[REGIONS], 3), "size/proposals_parquet_mb": round(sizes[PROPOSALS], 3),
        "size/proposals_mb": round(sizes[PROPOSAL_FEATURES], 3), "time/seconds": round(time.perf_counter() - tick, 3),
        **corpus.skips.as_metrics("skipped/"), **corpus.defects.as_metrics("kept_with_defect/"),
    }
    for split in ("train", "val", "test"):  # every split, 0 where nothing was kept
        part = proposals[proposals["split"] == split]
        metrics[f"{split}/proposals"] = len(part)
        metrics[f"{split}/proposals_at_train_positive_iou"] = int((part["best_iou"] > grn.train_positive_iou).sum())
    log.info("%s: %d regions, %d proposals (%.1f MB) in %.1f s", dataset, len(corpus.frame), len(proposals),
             sum(sizes.values()), metrics["time/seconds"])
    return metrics


def load_regions(paths: Paths, dataset: str) -> dict:
    """regions.pt of extract_region_features (weights_only)."""
    path = paths.stage_dir(STAGE, dataset) / REGIONS
    if not path.exists():
        raise DataError(path, f"missing; run extract_region_features {dataset} first")
    return torch.load(path, map_location="cpu", weights_only=True)
