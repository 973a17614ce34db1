"""Baselines that need no model: the chance level and the constant box.

- `chance_p_at_1(tuples)`: exact expected P@1 of a uniform pick among the image's annotated boxes
  (the distinct regions of that image in the table), a pick counting as correct when its IoU with
  the ground truth is >= 0.5 (inclusive pixel convention). No sampling: each query contributes the
  share of its image's boxes that are correct, and the result is the mean over queries. It equals
  `refexp.metrics.boxes.chance_at_1` with each image's boxes as the candidates (tested); this one
  computes each image's IoU matrix once, so the 60,105 real test queries take seconds.
- `group_baselines(train, test, kinds)`: both baselines per expression kind and per target size.
- `mean_normalised_box(tuples)` / `constant_box_predictions(mean_box, tuples)` /
  `constant_box_accuracy(train, test)`: the mean training box in normalised coordinates
  (x1 / W, y1 / H, w / W, h / H with inclusive widths w = x2 - x1 + 1), mapped to each test
  image (x1 = mx * W, x2 = x1 + mw * W - 1) and scored by regression accuracy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from refexp.metrics.attention import target_size_groups
from refexp.metrics.boxes import IOU_THRESHOLD, accuracy, box_iou

BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")
    if df.empty:
        raise ValueError(f"{what} has no rows")


def chance_p_at_1_per_query(tuples: pd.DataFrame, threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """Per query (row order kept): the share of its image's distinct annotated boxes with IoU >= threshold."""
    _require(tuples, ["image_id", "region_id", *BOX_COLUMNS], "tuples")
    shares = np.empty(len(tuples), dtype=np.float64)
    positions = np.arange(len(tuples))
    for _, rows in tuples.assign(_pos=positions).groupby("image_id", sort=False):
        regions = rows.drop_duplicates("region_id")
        candidates = regions[BOX_COLUMNS].to_numpy(np.float64).copy()  # (R, 4)
        correct = (box_iou(candidates, candidates) >= threshold).double().mean(0).numpy()  # (R,) per gt region
        share_of = dict(zip(regions["region_id"], correct))
        shares[rows["_pos"].to_numpy()] = [share_of[r] for r in rows["region_id"]]
    return shares


def chance_p_at_1(tuples: pd.DataFrame, threshold: float = IOU_THRESHOLD) -> float:
    """Exact expected P@1 of a uniform pick among each image's annotated boxes (mean over queries)."""
    return float(chance_p_at_1_per_query(tuples, threshold).mean())


def normalised_boxes(tuples: pd.DataFrame) -> np.ndarray:
    """(N, 4) x1 / W, y1 / H, w / W, h / H with inclusive widths."""
    _require(tuples, [*BOX_COLUMNS, "image_width", "image_height"], "tuples")
    w = tuples["image_width"].to_numpy(np.float64)
    h = tuples["image_height"].to_numpy(np.float64)
    if (w <= 0).any() or (h <= 0).any():
        bad = tuples.loc[(w <= 0) | (h <= 0)].iloc[0]
        raise ValueError(f"image {bad.get('image_id', '?')} has a non-positive size {bad['image_width']}x{bad['image_height']}")
    x1, y1, x2, y2 = (tuples[c].to_numpy(np.float64) for c in BOX_COLUMNS)
    return np.stack([x1 / w, y1 / h, (x2 - x1 + 1) / w, (y2 - y1 + 1) / h], axis=1)


def mean_normalised_box(train: pd.DataFrame) -> np.ndarray:
    """The mean training box (mx, my, mw, mh) in normalised coordinates, one per tuple."""
    return normalised_boxes(train).mean(0)


def denormalise(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """(N, 4) normalised (x, y, w, h) -> inclusive pixel [x1, y1, x2, y2] in each image."""
    x1 = boxes[:, 0] * widths
    y1 = boxes[:, 1] * heights
    return np.stack([x1, y1, x1 + boxes[:, 2] * widths - 1, y1 + boxes[:, 3] * heights - 1], axis=1)


def constant_box_predictions(mean_box: np.ndarray, test: pd.DataFrame) -> np.ndarray:
    """The one normalised box mapped to every test image: (N, 4) inclusive pixel boxes."""
    n = len(test)
    return denormalise(np.tile(np.asarray(mean_box, dtype=np.float64), (n, 1)),
                       test["image_width"].to_numpy(np.float64), test["image_height"].to_numpy(np.float64))


def constant_box_accuracy(train: pd.DataFrame, test: pd.DataFrame, threshold: float = IOU_THRESHOLD) -> float:
    """Regression accuracy of always predicting the mean training box (normalised, per image)."""
    _require(test, [*BOX_COLUMNS, "image_width", "image_height"], "test tuples")
    pred = constant_box_predictions(mean_normalised_box(train), test)
    return accuracy(pred, test[BOX_COLUMNS].to_numpy(np.float64).copy(), threshold)


def group_baselines(train: pd.DataFrame, test: pd.DataFrame, kinds: list[str]
                    ) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Chance P@1 and constant-box accuracy per expression kind and per target size (`small_target`,
    `large_target`). A group's chance is the mean of its queries' chance over ALL their image's boxes:
    a sub-table would drop the boxes no query of the group refers to, and inflate the chance."""
    test = test.reset_index(drop=True)
    chance_per_query = chance_p_at_1_per_query(test)
    sizes = target_size_groups(test)
    groups = {**{k: (test["kind"] == k).to_numpy() for k in kinds},
              **{f"{z}_target": (sizes == z).to_numpy() for z in ("small", "large")}}
    chance = {g: float(chance_per_query[m].mean()) if m.any() else None for g, m in groups.items()}
    constant = {g: constant_box_accuracy(train, test[m]) if m.any() else None for g, m in groups.items()}
    return chance, constant
