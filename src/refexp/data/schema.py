"""The common record schema: one row per (image, region, expression).

Boxes are 0-based pixel coordinates with inclusive ends (ReferIt's convention,
so a box's width is x2 - x1 + 1). COCO's [x, y, w, h] maps to
x1 = x, x2 = x + w - 1. Masks, when present, are COCO compressed RLE strings
(pycocotools) of size image_height x image_width.
"""
from __future__ import annotations

import pandas as pd

# name -> pandas dtype
COLUMNS: dict[str, str] = {
    "dataset": "string",
    "image_id": "string",
    "image_path": "string",  # relative to the repo root; <NA> when images are absent
    "image_width": "int64",
    "image_height": "int64",
    "region_id": "string",
    "x1": "float64",
    "y1": "float64",
    "x2": "float64",
    "y2": "float64",
    "mask_rle": "string",  # COCO compressed RLE counts, or <NA>
    "expression": "string",
    "tokens": "object",  # list[str]
    "category": "string",  # <NA> when the dataset has none
    "kind": "string",  # expression kind where known (synthetic: attribute/position/relation)
    "split": "string",
}
REQUIRED = ("image_id", "region_id", "x1", "y1", "x2", "y2", "expression", "split")


class SchemaError(ValueError):
    """A table that does not follow the common schema."""


def to_frame(records: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Build a schema-conformant frame; missing optional columns become <NA>."""
    df = pd.DataFrame(records) if not isinstance(records, pd.DataFrame) else records.copy()
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise SchemaError(f"records lack required columns {missing}")
    for col, dtype in COLUMNS.items():
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype=dtype if dtype != "object" else "object")
        elif dtype != "object":
            df[col] = df[col].astype(dtype)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra].reset_index(drop=True)


def box_width(df: pd.DataFrame) -> pd.Series:
    return df["x2"] - df["x1"] + 1


def box_height(df: pd.DataFrame) -> pd.Series:
    return df["y2"] - df["y1"] + 1
