"""Class-name expressions (vision-only/text-only paper, sec. 2.2).

"We directly use the visual class name as the textual expression for an image region":
a COCO instance of class `person` becomes the expression "person". `synthesize`
turns an instance table (refexp.data.coco.load_instances / prepare_coco's
instances.parquet) into common-schema records with that expression, its tokens,
the box and the mask. Crowd annotations (a group of objects, iscrowd=1) and instances
without a mask are left out unless asked for, and counted.
"""
from __future__ import annotations

import pandas as pd

from refexp.data.schema import to_frame
from refexp.data.skips import SkipCounter
from refexp.text.tokenize import tokenize

KIND = "class_name"


def class_name_expression(category: str) -> str:
    """The expression for a class: its name, lowercase, '_' read as a space ("traffic_light")."""
    return " ".join(category.replace("_", " ").lower().split())


def synthesize(instances: pd.DataFrame, dataset: str, skips: SkipCounter, source: str,
               include_crowd: bool = False) -> pd.DataFrame:
    """Instance rows -> common-schema records with expression = class name."""
    df = instances.reset_index(drop=True)
    keep = pd.Series(True, index=df.index)
    if not include_crowd and "iscrowd" in df.columns:
        crowd = df["iscrowd"].fillna(0).astype(int) == 1
        if crowd.any():
            skips.add("crowd_annotation", source, df.loc[crowd, "region_id"].iloc[0], n=int(crowd.sum()))
        keep &= ~crowd
    no_mask = df["mask_rle"].isna() & keep
    if no_mask.any():
        skips.add("instance_without_mask", source, df.loc[no_mask, "region_id"].iloc[0], n=int(no_mask.sum()))
    keep &= ~no_mask
    # "_" or "  " names no class: its expression would be empty.
    named = df["category"].map(lambda c: isinstance(c, str) and class_name_expression(c) != "")
    no_cat = ~named.astype(bool) & keep
    if no_cat.any():
        skips.add("instance_without_category", source, df.loc[no_cat, "region_id"].iloc[0], n=int(no_cat.sum()))
    keep &= ~no_cat
    df = df[keep].copy()
    df["dataset"] = dataset
    df["expression"] = [class_name_expression(c) for c in df["category"].astype(str)]
    df["tokens"] = [tokenize(e) for e in df["expression"]]
    df["kind"] = KIND
    if "split" not in df.columns:
        df["split"] = pd.NA
    return to_frame(df)
