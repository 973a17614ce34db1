"""Torch Datasets and collate over the prepared tables (common schema).

- `ImageStore`: every image of a table decoded once into one uint8 tensor (N, 3, S, S) (resized
  to S x S; the embedded images are 128 x 128 so the whole set fits in memory and the loader
  never waits on disk or PIL). Boxes are mapped into store coordinates with `to_store_boxes`.
- `BoxExpressionDataset`: one (image, box, expression) tuple per row: the image (a view into the
  store, no copy), the box in store coordinates with exclusive ends (for roi_align), the
  paper's 8-d x_spatial, and the token ids. `images=None` gives the image-free variant.
- `CaptionDataset`: (image, caption) pairs for caption pretraining; the box is the whole image.
- `collate_sequences`: pads token ids; inputs start with <bos>, targets end with <eos>.

Coordinates: table boxes are inclusive pixel indices (width = x2 - x1 + 1). A pixel i covers
[i, i + 1) in continuous coordinates, so the continuous box is [x1, x2 + 1).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from refexp.data.skips import DataError
from refexp.text.vocab import Vocab

log = logging.getLogger(__name__)


class ImageError(DataError):
    """An image that cannot be read, naming the file (a DataError: a stage reports it in one line)."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.file, self.record, self.detail = "", None, message


class ImageStore:
    """All images of a table, decoded once, as uint8 (N, 3, size, size)."""

    def __init__(self, image_paths: Sequence[str], root: Path, size: int):
        self.size = size
        absent = sum(1 for p in image_paths if p is None or p is pd.NA or (isinstance(p, float) and np.isnan(p)))
        if absent:
            # prepare kept these rows without an image (kept_with_defect/image_missing in its metrics)
            raise ImageError(f"{absent} of {len(image_paths)} rows name no image file on disk (the prepare stage "
                             "counted them under kept_with_defect/); fetch the images or use an image-free variant")
        unique = list(dict.fromkeys(str(p) for p in image_paths))
        self.index = {p: i for i, p in enumerate(unique)}
        self.images = torch.empty((len(unique), 3, size, size), dtype=torch.uint8)
        for i, rel in enumerate(unique):
            path = Path(root) / rel
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR)
                    self.images[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
            except (OSError, ValueError) as err:
                raise ImageError(f"{path}: cannot read image ({err})") from None
        log.info("image store: %d images at %dx%d (%.1f MB)", len(unique), size, size,
                 self.images.numel() / 1e6)

    def __len__(self) -> int:
        return len(self.images)

    def lookup(self, image_path: str) -> int:
        try:
            return self.index[str(image_path)]
        except KeyError:
            raise KeyError(f"image {image_path} is not in the store") from None


def continuous_boxes(frame: pd.DataFrame) -> np.ndarray:
    """(N, 4) float32 [x1, y1, x2 + 1, y2 + 1] in original image pixels."""
    b = frame[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float32).copy()
    b[:, 2:] += 1
    return b


def to_store_boxes(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray, size: int) -> np.ndarray:
    """Continuous boxes in original pixels -> continuous boxes in the S x S store image."""
    scale = np.stack([size / widths, size / heights, size / widths, size / heights], axis=1).astype(np.float32)
    return boxes * scale


def spatial_features(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """The paper's Eq. 1: [xmin, ymin, xmax, ymax, xcenter, ycenter, wbox, hbox] with the image
    normalised to width and height 2 and the origin at its centre (coordinates in [-1, 1]).
    `boxes` are continuous [x1, y1, x2 + 1, y2 + 1]."""
    w = widths.astype(np.float32)[:, None]
    h = heights.astype(np.float32)[:, None]
    x = boxes[:, [0, 2]] / w * 2 - 1
    y = boxes[:, [1, 3]] / h * 2 - 1
    return np.concatenate([
        x[:, :1], y[:, :1], x[:, 1:], y[:, 1:],
        x.mean(1, keepdims=True), y.mean(1, keepdims=True),
        x[:, 1:] - x[:, :1], y[:, 1:] - y[:, :1],
    ], axis=1).astype(np.float32)


def encode_tokens(token_lists: Sequence[Sequence[str]], vocab: Vocab, max_tokens: int) -> list[torch.Tensor]:
    """Token ids (unknown words -> <unk>; an empty list stays empty and scores only <eos>)."""
    return [torch.tensor(vocab.encode(list(t)[:max_tokens]), dtype=torch.long) for t in token_lists]


class BoxExpressionDataset(Dataset):
    """(image, box, expression) tuples; `images=None` leaves out the pixels (image-free model).
    With `features` (a refexp.training.features.FeatureCache of a frozen backbone) items carry the
    cached pooled features box_pooled / context_pooled (read from the memory map per item)
    instead of pixels."""

    def __init__(self, frame: pd.DataFrame, vocab: Vocab, images: ImageStore | None, max_tokens: int = 20,
                 features=None):
        self.frame = frame.reset_index(drop=True)
        self.features = features
        if features is not None:
            images = None
            keys = self.frame[["x1", "y1", "x2", "y2"]].to_numpy()
            self.box_rows = np.array([features.rows_of(p, [b])[0] for p, b in zip(self.frame["image_path"], keys)])
            self.context_rows = np.array([features.rows_of(p, [[0, 0, w - 1, h - 1]])[0] for p, w, h in
                                          zip(self.frame["image_path"], self.frame["image_width"], self.frame["image_height"])])
        widths = self.frame["image_width"].to_numpy(dtype=np.float32)
        heights = self.frame["image_height"].to_numpy(dtype=np.float32)
        boxes = continuous_boxes(self.frame)
        self.spatial = torch.from_numpy(spatial_features(boxes, widths, heights))
        self.images = images
        if images is not None:
            self.boxes = torch.from_numpy(to_store_boxes(boxes, widths, heights, images.size))
            self.image_index = torch.tensor([images.lookup(p) for p in self.frame["image_path"]], dtype=torch.long)
        self.tokens = encode_tokens(self.frame["tokens"], vocab, max_tokens)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> dict:
        item = {"spatial": self.spatial[i], "tokens": self.tokens[i]}
        if self.features is not None:
            item["box_pooled"] = torch.from_numpy(np.asarray(self.features.features[self.box_rows[i]], dtype=np.float32))
            item["context_pooled"] = torch.from_numpy(np.asarray(self.features.features[self.context_rows[i]], dtype=np.float32))
        if self.images is not None:
            item["image"] = self.images.images[self.image_index[i]]
            item["box"] = self.boxes[i]
        return item


class CaptionDataset(Dataset):
    """(image, caption) pairs; the box is the whole store image (x_box unused when W_local = 0)."""

    def __init__(self, frame: pd.DataFrame, vocab: Vocab, images: ImageStore | None, max_tokens: int = 20,
                 features=None):
        self.frame = frame.reset_index(drop=True)
        self.images = images
        self.features = features
        if features is not None:
            self.context_rows = np.array([features.rows_of(p, [[0, 0, w - 1, h - 1]])[0] for p, w, h in
                                          zip(self.frame["image_path"], self.frame["image_width"], self.frame["image_height"])])
        else:
            self.image_index = torch.tensor([images.lookup(p) for p in self.frame["image_path"]], dtype=torch.long)
        self.tokens = encode_tokens(self.frame["tokens"], vocab, max_tokens)
        self.full_box = torch.tensor([0.0, 0.0, images.size, images.size]) if images is not None else None
        self.full_spatial = torch.tensor([-1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 2.0, 2.0])

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> dict:
        if self.features is not None:
            pooled = torch.from_numpy(np.asarray(self.features.features[self.context_rows[i]], dtype=np.float32))
            return {"context_pooled": pooled, "spatial": self.full_spatial, "tokens": self.tokens[i]}
        return {"image": self.images.images[self.image_index[i]], "box": self.full_box,
                "spatial": self.full_spatial, "tokens": self.tokens[i]}


def pad_sequences(tokens: Sequence[torch.Tensor], bos: int, eos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs (B, T) = <bos> w1..wn, targets (B, T) = w1..wn <eos>, padded with `pad` (T = max n + 1)."""
    t = max(len(x) for x in tokens) + 1
    inputs = torch.full((len(tokens), t), pad, dtype=torch.long)
    targets = torch.full((len(tokens), t), pad, dtype=torch.long)
    for i, x in enumerate(tokens):
        inputs[i, 0] = bos
        inputs[i, 1:len(x) + 1] = x
        targets[i, :len(x)] = x
        targets[i, len(x)] = eos
    return inputs, targets


def collate_sequences(samples: list[dict], bos: int = 1, eos: int = 2, pad: int = 0) -> dict:
    """Stack a list of dataset items; ids default to refexp.text.vocab's fixed specials."""
    batch: dict[str, torch.Tensor] = {}
    for key in samples[0]:
        if key != "tokens":
            batch[key] = torch.stack([s[key] for s in samples])
    batch["inputs"], batch["targets"] = pad_sequences([s["tokens"] for s in samples], bos, eos, pad)
    return batch
