"""Region checks and filters of the expressional-region-retrieval benchmark (GRN paper, sec. 4.1).

`validate_regions` removes unusable records and counts each under a reason (so
input = kept + sum of reasons); the three paper filters each return a keep mask:
- `area_filter`: region area between `area_min` and `area_max` of its image's area;
- `multi_object_filter`: the region describes several objects and a relationship:
  from VG's region graph where the region has one (>= 2 objects and >= 1 relationship),
  else by `describes_relationship` (rule below);
- `iou_dedup_filter`: within an image, of two regions with IoU > threshold keep the
  larger (greedy from the largest area, ties by region id).

Linguistic rule (`describes_relationship`, used only without a region graph): the
mining tokens contain a relation word (preposition or relation verb from
RELATION_WORDS) with a content word (not a determiner, pronoun, auxiliary, number
or relation word) on each side. "a bag", "the blue sky", "cars headlights are off"
fail; "man wearing sneakers", "tall buildings surrounded by trees" pass. Known
limit: attribute phrases with a preposition ("the clock is green in colour") pass.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from refexp.data.skips import SkipCounter
from refexp.text.bleu import mining_tokens

RELATION_WORDS = frozenset("""
on in of with near behind under above below beside next by over inside between around along across
at from into onto through toward towards beneath underneath atop against outside front top
holding wearing riding sitting standing walking eating carrying playing looking hanging parked
covered using watching pulling pushing flying lying laying leaning surrounded attached filled
has have having holds wears rides sits stands walks eats carries plays looks hangs covers uses
watches pulls pushes flies lies leans surrounds contains containing touching throwing catching
swinging hitting drinking reading talking crossing driving cutting mounted painted printed
""".split())

FUNCTION_WORDS = frozenset("""
a an the this that these those its his her their our my your some any each every another
is are was were be been being it they he she there here and or but to as very
one two three four five six seven eight nine ten
""".split())


def describes_relationship(phrase: str) -> bool:
    tokens = mining_tokens(phrase)
    content = [t not in RELATION_WORDS and t not in FUNCTION_WORDS and not t.isdigit() for t in tokens]
    for k, tok in enumerate(tokens):
        if tok in RELATION_WORDS and any(content[:k]) and any(content[k + 1:]):
            return True
    return False


def validate_regions(regions: pd.DataFrame, images: pd.DataFrame, skips: SkipCounter, source: str) -> pd.DataFrame:
    """Drop, and count under a reason, regions that cannot be used.

    Reasons: empty_phrase (empty or whitespace), non_ascii_phrase, nonpositive_box_size,
    unknown_image (not in image_data), outside_image (no overlap with the image).
    Boxes that stick partly out of their image are clipped to it (counted in the
    returned frame's attrs["clipped_to_image"], not dropped).
    """
    df = regions.merge(images[["image_id", "width", "height"]].rename(
        columns={"width": "image_width", "height": "image_height"}), on="image_id", how="left")
    phrase = df["phrase"].astype(str)
    reasons = pd.Series(pd.NA, index=df.index, dtype="string")

    def mark(mask: pd.Series, reason: str) -> None:
        mask = mask & reasons.isna()
        n = int(mask.sum())
        if n:
            skips.add(reason, source, df.loc[mask, "region_id"].iloc[0], n=n)
        reasons[mask] = reason

    mark(phrase.str.strip() == "", "empty_phrase")
    mark(~phrase.map(str.isascii), "non_ascii_phrase")
    mark((df["width"] <= 0) | (df["height"] <= 0), "nonpositive_box_size")
    mark(df["image_width"].isna(), "unknown_image")
    x2 = df["x"] + df["width"]
    y2 = df["y"] + df["height"]
    outside = (x2 <= 0) | (y2 <= 0) | (df["x"] >= df["image_width"]) | (df["y"] >= df["image_height"])
    mark(outside.fillna(False), "outside_image")
    df = df[reasons.isna()].copy()
    # Clip boxes that stick out; continuous coordinates [x, x + width).
    cx1, cy1 = df["x"].clip(lower=0), df["y"].clip(lower=0)
    cx2 = np.minimum(df["x"] + df["width"], df["image_width"])
    cy2 = np.minimum(df["y"] + df["height"], df["image_height"])
    clipped = (cx1 != df["x"]) | (cy1 != df["y"]) | (cx2 != df["x"] + df["width"]) | (cy2 != df["y"] + df["height"])
    df["x"], df["y"], df["width"], df["height"] = cx1, cy1, cx2 - cx1, cy2 - cy1
    df["image_width"] = df["image_width"].astype(np.int64)
    df["image_height"] = df["image_height"].astype(np.int64)
    df = df.reset_index(drop=True)
    df.attrs["clipped_to_image"] = int(clipped.sum())
    return df


def area_filter(df: pd.DataFrame, area_min: float | None, area_max: float | None) -> np.ndarray:
    frac = (df["width"] * df["height"]) / (df["image_width"] * df["image_height"])
    keep = np.ones(len(df), bool)
    if area_min is not None:
        keep &= (frac >= area_min).to_numpy()
    if area_max is not None:
        keep &= (frac <= area_max).to_numpy()
    return keep


def multi_object_filter(df: pd.DataFrame, graph_counts: pd.DataFrame | None, mode: str) -> tuple[np.ndarray, dict]:
    """Keep mask and how many regions were judged by graph vs by the linguistic rule."""
    if mode == "off":
        return np.ones(len(df), bool), {"by_graph": 0, "by_rule": 0}
    by_graph = np.zeros(len(df), bool)
    graph_ok = np.zeros(len(df), bool)
    if mode == "graph_or_rule" and graph_counts is not None and len(graph_counts):
        g = df[["region_id"]].merge(graph_counts, on="region_id", how="left")
        by_graph = g["n_objects"].notna().to_numpy()
        graph_ok = ((g["n_objects"] >= 2) & (g["n_relationships"] >= 1)).fillna(False).to_numpy()
    rule_ok = np.zeros(len(df), bool)
    idx = np.flatnonzero(~by_graph)
    rule_ok[idx] = [describes_relationship(p) for p in df["phrase"].to_numpy()[idx]]
    keep = np.where(by_graph, graph_ok, rule_ok)
    return keep, {"by_graph": int(by_graph.sum()), "by_rule": int((~by_graph).sum())}


def iou_dedup_filter(df: pd.DataFrame, threshold: float | None) -> np.ndarray:
    """Greedy per image: a region is dropped when a larger kept region has IoU > threshold."""
    keep = np.ones(len(df), bool)
    if threshold is None or len(df) == 0:
        return keep
    x1 = df["x"].to_numpy(np.float64)
    y1 = df["y"].to_numpy(np.float64)
    x2 = x1 + df["width"].to_numpy(np.float64)
    y2 = y1 + df["height"].to_numpy(np.float64)
    area = (x2 - x1) * (y2 - y1)
    order = np.lexsort((df["region_id"].to_numpy(), -area, df["image_id"].to_numpy()))
    img_sorted = df["image_id"].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, img_sorted[1:] != img_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends):
        if e - s < 2:
            continue
        idx = order[s:e]  # largest first
        ix1 = np.maximum(x1[idx][:, None], x1[idx][None, :])
        iy1 = np.maximum(y1[idx][:, None], y1[idx][None, :])
        ix2 = np.minimum(x2[idx][:, None], x2[idx][None, :])
        iy2 = np.minimum(y2[idx][:, None], y2[idx][None, :])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        iou = inter / (area[idx][:, None] + area[idx][None, :] - inter)
        alive = np.ones(e - s, bool)
        for i in range(e - s):
            if alive[i]:
                alive[i + 1:] &= ~(iou[i, i + 1:] > threshold)
        keep[idx] = alive
    return keep
