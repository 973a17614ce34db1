"""Build the expressional-region-retrieval benchmark from Visual Genome regions (GRN paper, sec. 4.1).

Steps, each counted in the metrics:
1. validate (bad records counted per reason), 2. area filter, 3. several-objects filter,
4. IoU de-duplication within an image, 5. pair regions of different images by
BLEU-2 then METEOR (`refexp.mining.mine_pairs`), 6. split the images that hold a kept
pair into train/val/test at random (pairs across splits are dropped and counted),
7. merge kept pairs into sets (connected components, within a split), 8. one random
region per set is the query, the rest its targets.

Outputs: `regions` (set members), `queries` (one per set), `pairs` (every BLEU pair) and
`corpus`: every region that passed steps 1-4 in every image that has a split, set member
or not (set_id -1, role "none"), what a query is retrieved against; its set members' rows
equal `regions`'. Metrics per split: images and regions (of the set members), queries,
corpus_regions and corpus_images.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from refexp.data.skips import SkipCounter
from refexp.mining.pairs import mine_pairs
from refexp.mining.regions import area_filter, iou_dedup_filter, multi_object_filter, validate_regions

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CORPUS_COLUMNS = ["dataset", "image_id", "image_path", "image_width", "image_height", "region_id",
                  "x1", "y1", "x2", "y2", "expression", "split", "set_id", "role"]


@dataclass(frozen=True)
class BenchmarkTables:
    regions: pd.DataFrame  # one row per region in a set (query or target)
    queries: pd.DataFrame  # one row per set: query region and its targets
    pairs: pd.DataFrame  # every BLEU pair with scores, kept flag and split
    # every filtered region of every image with a split (the retrieval corpus): the regions
    # columns, set_id -1 and role "none" for a region in no set
    corpus: pd.DataFrame


def image_paths(images: pd.DataFrame, raw_dir: str | Path) -> pd.Series:
    """Repo-relative image file per image: <raw>/<folder>/<file> from the url's last two parts."""
    raw_dir = Path(raw_dir)

    def one(row) -> str:
        url = row.url if isinstance(row.url, str) and row.url else ""
        parts = url.rstrip("/").split("/")[-2:] if url else []
        rel = "/".join(parts) if len(parts) == 2 else f"VG_100K/{row.image_id}.jpg"
        return str(raw_dir / rel)

    return pd.Series([one(r) for r in images.itertuples()], index=images.index, dtype="string")


def build(regions: pd.DataFrame, images: pd.DataFrame, graph_counts: pd.DataFrame | None, *, dataset: str,
          raw_dir: str | Path, source: str, skips: SkipCounter, seed: int, area_min: float | None,
          area_max: float | None, multi_object: str, iou_dedup: float | None, bleu_threshold: float,
          meteor_threshold: float, direction_rule: str, val_fraction: float, test_fraction: float,
          meteor: Any = None, n_jvms: int = 2, n_blocks: int = 1, client: Any = None,
          ) -> tuple[BenchmarkTables, dict[str, Any]]:
    # What the loader read (rows it kept + its skips); a frame built in memory counts its own rows.
    m: dict[str, Any] = {"input/regions": int(skips.inputs.get("regions", len(regions) + skips.total))}
    valid = validate_regions(regions, images, skips, source)
    m["valid/regions"] = len(valid)
    m["valid/clipped_to_image"] = valid.attrs.get("clipped_to_image", 0)
    m.update(skips.as_metrics())

    keep = area_filter(valid, area_min, area_max)
    m["filter/area/dropped"], m["filter/area/kept"] = int((~keep).sum()), int(keep.sum())
    df = valid[keep].reset_index(drop=True)
    keep, how = multi_object_filter(df, graph_counts, multi_object)
    m["filter/multi_object/dropped"], m["filter/multi_object/kept"] = int((~keep).sum()), int(keep.sum())
    m["filter/multi_object/judged_by_graph"], m["filter/multi_object/judged_by_rule"] = how["by_graph"], how["by_rule"]
    df = df[keep].reset_index(drop=True)
    keep = iou_dedup_filter(df, iou_dedup)
    m["filter/iou_dedup/dropped"], m["filter/iou_dedup/kept"] = int((~keep).sum()), int(keep.sum())
    df = df[keep].reset_index(drop=True)

    pairs = mine_pairs(df[["image_id", "phrase"]], bleu_threshold=bleu_threshold, meteor_threshold=meteor_threshold,
                       rule=direction_rule, meteor=meteor, n_jvms=n_jvms, n_blocks=n_blocks, client=client)
    stats = pairs.attrs.get("stats", {})
    m["mining/pairs_bleu"], m["mining/pairs_kept"] = len(pairs), int(pairs["kept"].sum())
    m["mining/distinct_strings"], m["mining/candidates"] = stats.get("distinct_strings", 0), stats.get("candidates", 0)
    for key in ("time_index_s", "time_bleu_s", "time_meteor_s"):
        m[f"mining/{key}"] = round(float(stats.get(key, 0.0)), 3)

    kept = pairs[pairs["kept"]]
    rng = np.random.default_rng(seed)
    img = df["image_id"].to_numpy()
    used_images = np.unique(np.concatenate([img[kept["a"]], img[kept["b"]]])) if len(kept) else np.zeros(0, np.int64)
    perm = rng.permutation(used_images)
    n_test = int(round(test_fraction * perm.size))
    n_val = int(round(val_fraction * perm.size))
    split_of_image = pd.Series(["test"] * n_test + ["val"] * n_val + ["train"] * (perm.size - n_test - n_val),
                               index=perm, dtype="string")
    row_split = split_of_image.reindex(img).fillna("").to_numpy(dtype=object)  # "" = image holds no kept pair
    a_split, b_split = row_split[pairs["a"].to_numpy()], row_split[pairs["b"].to_numpy()]
    same_split = (a_split == b_split) & (a_split != "")
    pairs = pairs.assign(split=pd.array(np.where(pairs["kept"] & same_split, a_split, None), dtype="string"))
    m["sets/pairs_across_splits_dropped"] = int((pairs["kept"] & ~same_split).sum())
    used = pairs[pairs["split"].notna()]

    # Sets: connected components of the kept, same-split pair graph.
    n = len(df)
    graph = coo_matrix((np.ones(len(used)), (used["a"].to_numpy(), used["b"].to_numpy())), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    in_pair = np.zeros(n, bool)
    in_pair[used["a"].to_numpy()] = True
    in_pair[used["b"].to_numpy()] = True
    members = np.flatnonzero(in_pair)
    set_label = label[members]
    _, set_id = np.unique(set_label, return_inverse=True)  # numbered by smallest member row
    order = np.lexsort((members, set_id))
    members, set_id = members[order], set_id[order]
    starts = np.flatnonzero(np.r_[True, set_id[1:] != set_id[:-1]]) if members.size else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, members.size])
    query_rows = members[starts + (rng.random(starts.size) * sizes).astype(np.int64)]
    role = np.full(members.size, "target", dtype=object)
    role[np.isin(members, query_rows)] = "query"

    paths = image_paths(images.set_index("image_id").loc[np.unique(img)].reset_index(), raw_dir)
    path_of = pd.Series(paths.to_numpy(), index=np.unique(img))
    row_set = np.full(n, -1, np.int64)
    row_set[members] = set_id
    row_role = np.full(n, "none", dtype=object)
    row_role[members] = role
    regions_out = _region_table(df, members, dataset, path_of, row_split, row_set, row_role)
    # The test corpus: every filtered region of every image with a split, set member or not.
    corpus_rows = np.flatnonzero(row_split != "")
    corpus_out = _region_table(df, corpus_rows, dataset, path_of, row_split, row_set, row_role)[CORPUS_COLUMNS]
    q = regions_out[regions_out["role"] == "query"]
    targets = regions_out[regions_out["role"] == "target"].groupby("set_id")["region_id"].agg(list)
    queries = pd.DataFrame({"set_id": q["set_id"].to_numpy(), "query_region_id": q["region_id"].to_numpy(),
                            "image_id": q["image_id"].to_numpy(), "split": q["split"].to_numpy(),
                            "target_region_ids": [targets.get(s, []) for s in q["set_id"]]})
    rid = df["region_id"].astype(str).to_numpy()
    pairs_out = pd.DataFrame({"region_id_a": rid[pairs["a"]], "region_id_b": rid[pairs["b"]],
                              "image_id_a": img[pairs["a"]].astype(str), "image_id_b": img[pairs["b"]].astype(str),
                              **{c: pairs[c].to_numpy() for c in ("bleu_ab", "bleu_ba", "meteor_ab", "meteor_ba", "kept")},
                              "split": pairs["split"].to_numpy()})
    m["sets/count"] = int(starts.size)
    for split in SPLITS:
        r = regions_out[regions_out["split"] == split]
        m[f"{split}/images"] = int(r["image_id"].nunique())
        m[f"{split}/regions"] = int(len(r))
        m[f"{split}/queries"] = int((r["role"] == "query").sum())
        c = corpus_out[corpus_out["split"] == split]
        m[f"{split}/corpus_regions"] = int(len(c))
        m[f"{split}/corpus_images"] = int(c["image_id"].nunique())
    assert m["input/regions"] == m["valid/regions"] + skips.total, "region counts must add up"
    return BenchmarkTables(regions_out, queries, pairs_out, corpus_out), m


def _region_table(df: pd.DataFrame, rows: np.ndarray, dataset: str, path_of: pd.Series, row_split: np.ndarray,
                  row_set: np.ndarray, row_role: np.ndarray) -> pd.DataFrame:
    """One output row per filtered region `rows` (positions in df): box as inclusive pixels."""
    sel = df.iloc[rows]
    return pd.DataFrame({
        "dataset": pd.array([dataset] * rows.size, dtype="string"),
        "image_id": sel["image_id"].astype(str).astype("string").to_numpy(),
        "image_path": pd.array(path_of.reindex(sel["image_id"]).to_numpy(), dtype="string"),
        "image_width": sel["image_width"].to_numpy(np.int64), "image_height": sel["image_height"].to_numpy(np.int64),
        "region_id": sel["region_id"].astype(str).astype("string").to_numpy(),
        "x1": sel["x"].to_numpy(), "y1": sel["y"].to_numpy(),
        "x2": (sel["x"] + sel["width"] - 1).to_numpy(), "y2": (sel["y"] + sel["height"] - 1).to_numpy(),
        "expression": pd.array(sel["phrase"].to_numpy(), dtype="string"),
        "set_id": row_set[rows].astype(np.int64), "role": pd.array(row_role[rows], dtype="string"),
        "split": pd.array(row_split[rows], dtype="string"),
    })
