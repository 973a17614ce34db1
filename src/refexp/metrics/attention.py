"""Where an image attention map looks, against the ground-truth box (paper 003's error analysis ranks
"image attention" as the first cause of failure; these numbers measure it).

- `cells_in_box(grid, boxes, widths, heights) -> (N, grid * grid) bool`: which cells of a grid x grid
  attention map over the whole image have their centre inside each ground-truth box. Boxes are
  inclusive pixels (x1, y1, x2, y2), so a box covers the continuous span [x1, x2 + 1) of an image of
  width W; a cell (row r, column c) has its centre at ((c + 0.5) W / grid, (r + 0.5) H / grid).
  Cells are row-major, as `AttentionRegression` flattens its (grid, grid) map.
- `attention_localisation(attention, inside) -> (peak_in_box, mass_in_box)`, each (N,):
  whether the map's largest cell is inside the box (an all-zero map has no peak: False), and the
  share of the map's mass inside the box (0 for an all-zero map).
- `target_size_groups(tuples, large_share)`: "large" when the box covers at least `large_share` of
  the image, else "small" (the embedded world's stuff bands vs its shapes; ReferIt's sky vs people).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# Boxes covering at least this share of the image count as large targets.
LARGE_TARGET_SHARE = 0.1


def cells_in_box(grid: int, boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    widths = np.asarray(widths, dtype=np.float64).reshape(-1, 1)
    heights = np.asarray(heights, dtype=np.float64).reshape(-1, 1)
    centres = (np.arange(grid) + 0.5) / grid  # (G,) normalised
    cx, cy = centres[None] * widths, centres[None] * heights  # (N, G) pixels
    in_x = (cx >= boxes[:, 0:1]) & (cx < boxes[:, 2:3] + 1)  # (N, G) columns
    in_y = (cy >= boxes[:, 1:2]) & (cy < boxes[:, 3:4] + 1)  # (N, G) rows
    return (in_y[:, :, None] & in_x[:, None, :]).reshape(len(boxes), grid * grid)  # (N, G * G)


def attention_localisation(attention: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    attention = np.asarray(attention, dtype=np.float64)
    if attention.shape != inside.shape:
        raise ValueError(f"attention {attention.shape} and cell mask {inside.shape} differ")
    total = attention.sum(1)
    alive = total > 0
    peak = inside[np.arange(len(attention)), attention.argmax(1)] & alive
    mass = np.where(alive, (attention * inside).sum(1) / np.where(alive, total, 1.0), 0.0)
    return peak, mass


def target_size_groups(tuples: pd.DataFrame, large_share: float = LARGE_TARGET_SHARE) -> pd.Series:
    area = (tuples["x2"] - tuples["x1"] + 1) * (tuples["y2"] - tuples["y1"] + 1)
    share = area / (tuples["image_width"] * tuples["image_height"])
    return pd.Series(np.where(share >= large_share, "large", "small"), index=tuples.index)
