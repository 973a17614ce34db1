"""`mine_pairs`: the region-pair rule of the expressional-region-retrieval benchmark, exactly.

Rule (issue 4): scored string = `refexp.text.bleu.normalize(phrase)`; a pair of rows
from different images passes BLEU when pycocoevalcap's sentence BLEU-2 > threshold in
both directions (each phrase the hypothesis against the other), and is kept when
pycocoevalcap's METEOR 1.5 > threshold in both directions too. ("either" is the
alternative direction rule; thresholds are strict.)

How it stays exact without an all-pairs loop:
1. identical scored strings are merged into one record (scored once);
2. `refexp.mining.join` generates a provably complete candidate set over distinct
   strings (bigram prefix filter + length filter) with exact clipped counts c1, c2;
3. `refexp.text.bleu.bleu2_arrays` turns counts into pycocoevalcap's exact floats;
4. record pairs are expanded back to row pairs of different images;
5. METEOR runs only on the distinct directed string pairs that survive BLEU,
   batched over several JVMs (`refexp.text.meteor.MeteorPool`).
The join is split into blocks of records; with a Dask client the blocks run as Dask
tasks (the index is scattered once), otherwise in-process. Output is identical.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from refexp.mining.join import RecordIndex, build_index, join_block
from refexp.text.bleu import DirectionRule, bleu2_arrays, normalize, passes, required_bigram_overlap
from refexp.text.meteor import MeteorPool

log = logging.getLogger(__name__)

PAIR_COLUMNS = ["a", "b", "bleu_ab", "bleu_ba", "meteor_ab", "meteor_ba", "kept"]


def _records(phrases: pd.Series) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """Row -> record code; records are distinct scored strings sorted by (length, string)."""
    norm = [normalize(p) if isinstance(p, str) else "" for p in phrases]
    codes, uniques = pd.factorize(pd.Series(norm, dtype=object), sort=False)
    uniques = uniques.tolist()
    token_lists = [u.split() for u in uniques]
    order = sorted(range(len(uniques)), key=lambda i: (len(token_lists[i]), uniques[i]))
    remap = np.empty(len(uniques), np.int64)
    remap[np.asarray(order, np.int64)] = np.arange(len(order))
    strings = [uniques[i] for i in order]
    vocab: dict[str, int] = {}
    token_ids = [np.array([vocab.setdefault(t, len(vocab)) for t in token_lists[i]], np.int64) for i in order]
    return remap[codes], strings, token_ids


def _block_bounds(index: RecordIndex, n_blocks: int) -> list[tuple[int, int]]:
    """Split records into contiguous blocks of about equal probe work."""
    n = index.n_records
    if n == 0:
        return []
    post_sizes = np.diff(index.post_ptr)
    rec = np.repeat(np.arange(n), np.diff(index.bigram_ptr))
    pos = np.arange(index.bigram_elems.size) - index.bigram_ptr[:-1][rec]
    in_prefix = pos < index.prefix_len[rec]
    work = np.bincount(rec[in_prefix], weights=post_sizes[index.bigram_elems[in_prefix]], minlength=n) + 1.0
    cum = np.cumsum(work)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_blocks) / n_blocks)
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _run_join(index: RecordIndex, n_blocks: int, client: Any | None) -> dict[str, Any]:
    bounds = _block_bounds(index, n_blocks)
    if client is None:
        parts = [join_block(index, a, b) for a, b in bounds]
    else:
        shared = client.scatter(index, broadcast=True)
        futures = [client.submit(join_block, shared, a, b, pure=False) for a, b in bounds]
        parts = client.gather(futures)
    if not parts:
        empty = np.zeros(0, np.int64)
        return {"y": empty, "x": empty, "c1": empty, "c2": empty, "probes": 0, "candidates": 0}
    return {
        **{k: np.concatenate([p[k] for p in parts]) for k in ("y", "x", "c1", "c2")},
        "probes": sum(p["probes"] for p in parts),
        "candidates": sum(p["candidates"] for p in parts),
    }


def _expand(u: np.ndarray, v: np.ndarray, row_order: np.ndarray, grp_ptr: np.ndarray,
            image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs (a < b, different images) of record pairs (u, v); also each row pair's source index."""
    n_u = grp_ptr[u + 1] - grp_ptr[u]
    n_v = grp_ptr[v + 1] - grp_ptr[v]
    sizes = n_u * n_v
    src = np.repeat(np.arange(u.size), sizes)
    offs = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    i = row_order[grp_ptr[u][src] + offs // n_v[src]]
    j = row_order[grp_ptr[v][src] + offs % n_v[src]]
    keep = image[i] != image[j]
    same_record = u[src] == v[src]
    keep &= ~same_record | (i < j)  # a record paired with itself: each row pair once
    i, j, src = i[keep], j[keep], src[keep]
    return np.minimum(i, j), np.maximum(i, j), src


@dataclass
class BleuStep:
    """Output of the BLEU step: row pairs (a < b) and the distinct-string pairs behind them."""

    a: np.ndarray
    b: np.ndarray
    bleu_ab: np.ndarray
    bleu_ba: np.ndarray
    src: np.ndarray  # row pair -> index into u/v
    a_is_u: np.ndarray  # row pair's `a` holds string u (else v)
    u: np.ndarray  # string pairs (records u <= v) passing BLEU
    v: np.ndarray
    strings: list[str]
    stats: dict[str, Any] = field(default_factory=dict)


def bleu_pairs(phrases: pd.DataFrame, *, bleu_threshold: float = 0.7, rule: DirectionRule = "both",
               n_blocks: int = 1, client: Any | None = None) -> BleuStep:
    """The BLEU step of `mine_pairs` alone: every row pair of different images passing BLEU."""
    for col in ("image_id", "phrase"):
        if col not in phrases.columns:
            raise ValueError(f"mine_pairs needs a column {col!r}")
    stats: dict[str, Any] = {"phrases": int(len(phrases))}
    t0 = time.perf_counter()
    row_record, strings, token_ids = _records(phrases["phrase"])
    lengths = np.fromiter((t.size for t in token_ids), np.int64, len(token_ids))
    image = pd.factorize(phrases["image_id"])[0].astype(np.int64)
    max_len = int(lengths.max()) if lengths.size else 0
    req = required_bigram_overlap(max(max_len, 2), bleu_threshold, rule)
    index = build_index(token_ids, req)
    stats["distinct_strings"] = len(strings)
    stats["time_index_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    joined = _run_join(index, max(1, n_blocks), client)
    y, x = joined["y"], joined["x"]
    bleu_yx = bleu2_arrays(joined["c1"], joined["c2"], lengths[y], lengths[x])
    bleu_xy = bleu2_arrays(joined["c1"], joined["c2"], lengths[x], lengths[y])
    ok = passes(bleu_yx, bleu_xy, bleu_threshold, rule)
    # A string paired with itself (same phrase, different images): c1 = len, c2 = len - 1.
    self_rec = np.flatnonzero(np.bincount(row_record, minlength=len(strings)) >= 2)
    self_bleu = bleu2_arrays(lengths[self_rec], np.maximum(lengths[self_rec] - 1, 0), lengths[self_rec], lengths[self_rec])
    self_ok = passes(self_bleu, self_bleu, bleu_threshold, rule)
    self_rec, self_bleu = self_rec[self_ok], self_bleu[self_ok]
    u = np.concatenate([y[ok], self_rec])
    v = np.concatenate([x[ok], self_rec])
    s_uv = np.concatenate([bleu_yx[ok], self_bleu])  # hypothesis u, reference v
    s_vu = np.concatenate([bleu_xy[ok], self_bleu])
    stats.update(probes=joined["probes"], candidates=joined["candidates"], verified=int(y.size),
                 string_pairs_bleu=int(u.size))

    row_order = np.argsort(row_record, kind="stable")
    grp_ptr = np.zeros(len(strings) + 1, np.int64)
    np.cumsum(np.bincount(row_record, minlength=len(strings)), out=grp_ptr[1:])
    a, b, src = _expand(u, v, row_order, grp_ptr, image)
    # BLEU scores per row pair: a's string is u or v.
    a_is_u = row_record[a] == u[src]
    bleu_ab = np.where(a_is_u, s_uv[src], s_vu[src])
    bleu_ba = np.where(a_is_u, s_vu[src], s_uv[src])
    stats["pairs_bleu"] = int(a.size)
    stats["time_bleu_s"] = time.perf_counter() - t1
    return BleuStep(a, b, bleu_ab, bleu_ba, src, a_is_u, u, v, strings, stats)


def mine_pairs(
    phrases: pd.DataFrame,
    *,
    bleu_threshold: float = 0.7,
    meteor_threshold: float = 0.6,
    rule: DirectionRule = "both",
    meteor: MeteorPool | None = None,
    n_jvms: int = 2,
    n_blocks: int = 1,
    client: Any | None = None,
) -> pd.DataFrame:
    """Pairs of rows of different images whose phrases pass BLEU-2 (and flag METEOR).

    phrases: DataFrame with columns image_id, phrase (row positions are the ids).
    Returns one row per pair passing BLEU: a < b (row positions), bleu_ab (phrase a as
    hypothesis, b as reference), bleu_ba, meteor_ab, meteor_ba, kept (METEOR passes too).
    Step counts and timings are in `result.attrs["stats"]`.
    """
    step = bleu_pairs(phrases, bleu_threshold=bleu_threshold, rule=rule, n_blocks=n_blocks, client=client)
    a, b, src, a_is_u, u, v, strings = step.a, step.b, step.src, step.a_is_u, step.u, step.v, step.strings
    bleu_ab, bleu_ba, stats = step.bleu_ab, step.bleu_ba, dict(step.stats)

    t2 = time.perf_counter()
    used = np.unique(src)  # string pairs with at least one cross-image row pair
    met_uv, met_vu = _meteor_for(u[used], v[used], strings, meteor, n_jvms)
    m_uv = np.full(u.size, np.nan)
    m_vu = np.full(u.size, np.nan)
    m_uv[used], m_vu[used] = met_uv, met_vu
    meteor_ab = np.where(a_is_u, m_uv[src], m_vu[src])
    meteor_ba = np.where(a_is_u, m_vu[src], m_uv[src])
    stats["meteor_string_pairs"] = int(used.size)
    stats["time_meteor_s"] = time.perf_counter() - t2

    kept = passes(meteor_ab, meteor_ba, meteor_threshold, rule)
    stats["pairs_kept"] = int(kept.sum())
    out = pd.DataFrame({"a": a, "b": b, "bleu_ab": bleu_ab, "bleu_ba": bleu_ba,
                        "meteor_ab": meteor_ab, "meteor_ba": meteor_ba, "kept": kept})
    out = out.sort_values(["a", "b"], kind="stable").reset_index(drop=True)
    out.attrs["stats"] = stats
    log.info("mine_pairs: %s", stats)
    return out


def _meteor_for(u: np.ndarray, v: np.ndarray, strings: list[str], meteor: MeteorPool | None,
                n_jvms: int) -> tuple[np.ndarray, np.ndarray]:
    """METEOR(hyp=u, ref=v) and METEOR(hyp=v, ref=u), each distinct directed pair scored once."""
    if u.size == 0:
        return np.zeros(0), np.zeros(0)
    directed = pd.DataFrame({"h": np.concatenate([u, v]), "r": np.concatenate([v, u])})
    uniq = directed.drop_duplicates().reset_index(drop=True)
    own = meteor is None
    pool = MeteorPool(n_jvms=n_jvms) if own else meteor
    try:
        scores = pool.score([strings[i] for i in uniq["h"]], [strings[i] for i in uniq["r"]])
    finally:
        if own:
            pool.close()
    key = pd.MultiIndex.from_frame(uniq)
    lookup = pd.Series(scores, index=key)
    both = lookup.reindex(pd.MultiIndex.from_frame(directed)).to_numpy()
    return both[: u.size], both[u.size :]
