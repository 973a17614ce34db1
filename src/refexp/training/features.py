"""Feature cache for frozen backbones: the descriptor of every box a model will ever look at (the
backbone's average-pooled map, or VGG-16's fc8), computed once and memory-mapped afterwards.

Layout of data/extract_features/<dataset>/:
- features.npy   float16 (N, D): each crop's descriptor (refexp.models.layers.ImageDescriptor)
  (np.load(mmap_mode="r"): pages are read on demand, nothing is copied up front);
- index.parquet  one row per crop: image_path, x1, y1, x2, y2 (inclusive pixels of the original
  image; the whole image is the box 0, 0, W - 1, H - 1), row;
- meta.json      backbone, pretrained, image_feature, crop_size, image_size, channels (a reader built for another
  backbone fails with a clear error instead of reading features of the wrong network).

Crops go through exactly the model's path (ImageStore -> crop_and_resize -> ImageDescriptor),
so a model reading the cache sees the same numbers it would compute (tested).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from refexp.artifacts import atomic_path
from refexp.data.torch_datasets import ImageStore, to_store_boxes
from refexp.models.layers import ImageDescriptor, crop_and_resize

log = logging.getLogger(__name__)

FEATURES = "features.npy"
INDEX = "index.parquet"
META = "meta.json"


class FeatureCacheError(ValueError):
    """A cache that is missing, inconsistent, or built for another backbone."""


def box_key(image_path: str, box) -> tuple:
    return (str(image_path), *(int(round(float(v))) for v in box))


def boxes_to_cache(tuples: pd.DataFrame, proposals: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Unique (image_path, x1, y1, x2, y2): every annotated box, every proposal, every whole image."""
    parts = [tuples[["image_path", "x1", "y1", "x2", "y2"]]] if "x1" in tuples else []  # captions: images only
    images = tuples.drop_duplicates("image_path")
    parts.append(pd.DataFrame({"image_path": images["image_path"].to_numpy(), "x1": 0, "y1": 0,
                               "x2": images["image_width"].to_numpy() - 1, "y2": images["image_height"].to_numpy() - 1}))
    if proposals:
        paths = dict(zip(images["image_id"].astype(str), images["image_path"]))
        for image_id, boxes in proposals.items():
            if image_id in paths and len(boxes):
                b = np.asarray(boxes).reshape(-1, 4)
                parts.append(pd.DataFrame({"image_path": paths[image_id], "x1": b[:, 0], "y1": b[:, 1],
                                           "x2": b[:, 2], "y2": b[:, 3]}))
    out = pd.concat(parts, ignore_index=True)
    out[["x1", "y1", "x2", "y2"]] = out[["x1", "y1", "x2", "y2"]].astype(float).round().astype(np.int64)
    out["image_path"] = out["image_path"].astype(str)
    return out.drop_duplicates().sort_values(["image_path", "x1", "y1", "x2", "y2"]).reset_index(drop=True)


@torch.no_grad()
def compute_features(boxes: pd.DataFrame, sizes: dict[str, tuple[int, int]], images: ImageStore, backbone: str,
                     pretrained: bool, crop_size: int, batch_size: int, feature: str = "pooled",
                     weights_file: str | None = None) -> np.ndarray:
    """(N, D) float32 descriptors (pooled map or fc8) of each row of `boxes`; sizes: image_path -> (width, height)."""
    net = ImageDescriptor(backbone, pretrained, feature, weights_file).eval()
    widths = np.array([sizes[p][0] for p in boxes["image_path"]], dtype=np.float32)
    heights = np.array([sizes[p][1] for p in boxes["image_path"]], dtype=np.float32)
    cont = boxes[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float32).copy()
    cont[:, 2:] += 1
    store = torch.from_numpy(to_store_boxes(cont, widths, heights, images.size))
    index = torch.tensor([images.lookup(p) for p in boxes["image_path"]], dtype=torch.long)
    out = np.empty((len(boxes), net.dim), dtype=np.float32)
    for start in range(0, len(boxes), batch_size):
        sl = slice(start, start + batch_size)
        crops = crop_and_resize(images.images, store[sl], crop_size, index[sl])  # (B, 3, c, c)
        out[sl] = net(crops).numpy()  # (B, D)
    return out


def write_cache(out_dir: Path, features: np.ndarray, index: pd.DataFrame, meta: dict) -> None:
    """Write the three files atomically (directory renamed into place when complete)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        np.save(tmp / FEATURES, features.astype(np.float16))
        index.assign(row=np.arange(len(index))).to_parquet(tmp / INDEX, index=False)
        (tmp / META).write_text(json.dumps({**meta, "rows": len(index), "channels": int(features.shape[1])},
                                           indent=2, sort_keys=True) + "\n")


@dataclass
class FeatureCache:
    """Read side: memory-mapped features and a (image_path, x1, y1, x2, y2) -> row map."""

    root: Path
    features: np.ndarray  # np.memmap (N, C) float16
    rows: dict[tuple, int]
    meta: dict

    @classmethod
    def open(cls, root: str | Path, backbone: str | None = None, crop_size: int | None = None,
             image_feature: str | None = None) -> "FeatureCache":
        root = Path(root)
        for name in (FEATURES, INDEX, META):
            if not (root / name).exists():
                raise FeatureCacheError(f"{root / name} not found: run the extract_features stage first")
        meta = json.loads((root / META).read_text())
        for key, want in (("backbone", backbone), ("crop_size", crop_size), ("image_feature", image_feature)):
            if want is not None and meta.get(key) != want:
                raise FeatureCacheError(f"{root}: features were extracted with {key}={meta.get(key)!r}, "
                                        f"the model wants {want!r}; re-run extract_features")
        features = np.load(root / FEATURES, mmap_mode="r")
        index = pd.read_parquet(root / INDEX)
        if len(index) != len(features):
            raise FeatureCacheError(f"{root}: {len(index)} index rows but {len(features)} feature rows")
        rows = {box_key(p, b): int(r) for p, *b, r in
                index[["image_path", "x1", "y1", "x2", "y2", "row"]].itertuples(index=False)}
        log.info("feature cache %s: %d crops x %d channels (memory-mapped)", root, *features.shape)
        return cls(root, features, rows, meta)

    def rows_of(self, image_path: str, boxes) -> list[int]:
        try:
            return [self.rows[box_key(image_path, b)] for b in np.asarray(boxes).reshape(-1, 4)]
        except KeyError as err:
            raise FeatureCacheError(f"{self.root}: no cached features for box {err.args[0]}; "
                                    "re-run extract_features on this table") from None

    def lookup(self, image_path: str, boxes: np.ndarray) -> np.ndarray:
        """(K, C) float32 features of the given inclusive boxes of one image."""
        return np.asarray(self.features[self.rows_of(image_path, boxes)], dtype=np.float32)

    def whole_image(self, image_path: str, width: int, height: int) -> np.ndarray:
        return self.lookup(image_path, np.array([[0, 0, width - 1, height - 1]]))[0]


def disk_bytes(root: Path) -> int:
    return sum(os.path.getsize(root / n) for n in (FEATURES, INDEX, META) if (root / n).exists())


def extract_dataset(section, paths, dataset: str, *, seed: int, out_dir: Path) -> dict:
    """The extract_features stage's work for one dataset (section: ExtractFeaturesConfig)."""
    import time

    from refexp.data.proposals import proposals_for_images

    prepared = paths.prepared(dataset)
    if (prepared / "tuples.parquet").exists():
        table = pd.read_parquet(prepared / "tuples.parquet")
        proposals, source = proposals_for_images(paths.raw(dataset), table, section.n_proposals, seed, paths.root)
    elif (prepared / "captions.parquet").exists():
        table = pd.read_parquet(prepared / "captions.parquet")
        proposals, source = None, "none (whole images only)"
    else:
        raise FeatureCacheError(f"{prepared} has neither tuples.parquet nor captions.parquet")
    table = table[table["image_path"].notna()]
    if table.empty:
        raise FeatureCacheError(f"{prepared}: no image paths, nothing to extract (image-free data)")
    boxes = boxes_to_cache(table, proposals)
    sizes = {str(p): (int(w), int(h)) for p, w, h in
             table.drop_duplicates("image_path")[["image_path", "image_width", "image_height"]].itertuples(index=False)}
    started = time.perf_counter()
    images = ImageStore(boxes["image_path"].unique().tolist(), paths.root, section.image_size)
    weights = paths.backbone_weights(section.backbone, section.pretrained)
    feats = compute_features(boxes, sizes, images, section.backbone, section.pretrained, section.crop_size,
                             section.batch_size, section.image_feature, str(weights) if weights else None)
    seconds = time.perf_counter() - started
    write_cache(out_dir, feats, boxes, {"backbone": section.backbone, "pretrained": section.pretrained,
                                        "image_feature": section.image_feature,
                                        "crop_size": section.crop_size, "image_size": section.image_size})
    return {"crops": len(boxes), "images": len(images), "channels": int(feats.shape[1]),
            "proposal_source": source, "seconds": seconds, "crops_per_s": len(boxes) / seconds if seconds else 0.0,
            "bytes": disk_bytes(out_dir)}
