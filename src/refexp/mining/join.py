"""Candidate join for BLEU-2 pairs: a complete prefix-filtered self-join over bigrams.

Every distinct scored string is a *record*: the multiset of its bigrams, each
occurrence made a distinct element ("on the"#1, "on the"#2), so multiset overlap
(pycocoevalcap's clipped bigram matches c2) is plain set intersection.

Completeness (why no passing pair is missed):
- `refexp.text.bleu.required_bigram_overlap` gives req[la, lb], a lower bound on c2
  for every pair of lengths (la, lb) that can pass, and -1 where none can.
- alpha(x) = min over lb of req[len(x), lb] is then a lower bound for every pair x is in.
- Order all elements by a global order (rarest first) and give each record the prefix
  of its first |x| - alpha(x) + 1 elements. If |x & y| >= max(alpha(x), alpha(y)), the two
  prefixes share an element (the prefix-filter lemma: otherwise at least alpha(x)
  elements of x lie outside x's prefix, i.e. |x| - (|x| - alpha(x) + 1) = alpha(x) - 1 < alpha(x)).
- So the pairs that share a prefix element contain every passing pair. Each candidate is
  then verified exactly: c2 >= req[la, lb] (necessary), then c1, c2 go to exact BLEU.

Records are numbered in (length, string) order; each pair (y, x) is produced once,
by the later record x probing the postings of its prefix elements for earlier y.
`join_block` handles a range of x and is what the Dask partitions run; the full
index is shared read-only, so partitioned and single-process output are identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class RecordIndex:
    """Flat (CSR) arrays describing the distinct strings, in join order."""

    length: np.ndarray  # (R,) tokens per record, non-decreasing
    bigram_ptr: np.ndarray  # (R+1,) CSR into bigram_elems
    bigram_elems: np.ndarray  # bigram-occurrence elements, each record's sorted by global rank
    unigram_ptr: np.ndarray  # (R+1,)
    unigram_elems: np.ndarray  # unigram-occurrence elements, sorted per record
    prefix_len: np.ndarray  # (R,) number of leading bigram elements indexed; 0 = cannot pass
    post_ptr: np.ndarray  # (E+1,) CSR of the prefix inverted index, by element rank
    post_records: np.ndarray  # records (ascending) whose prefix holds each element
    req: np.ndarray  # (L+1, L+1) required bigram overlap, -1 = impossible
    min_partner_len: np.ndarray  # (L+1,) smallest partner length with req >= 0 (L+1 if none)

    @property
    def n_records(self) -> int:
        return int(self.length.size)


def _occurrence_elements(token_ids: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per record, integer ids of its n-gram occurrences ((gram, k-th occurrence) -> id)."""
    lengths = np.fromiter((max(0, t.size - n + 1) for t in token_ids), np.int64, len(token_ids))
    ptr = np.zeros(len(token_ids) + 1, np.int64)
    np.cumsum(lengths, out=ptr[1:])
    total = int(ptr[-1])
    if total == 0:
        return ptr, np.zeros(0, np.int64)
    flat = np.concatenate([t for t in token_ids if t.size]) if token_ids else np.zeros(0, np.int64)
    tok_ptr = np.zeros(len(token_ids) + 1, np.int64)
    np.cumsum([t.size for t in token_ids], out=tok_ptr[1:])
    record = np.repeat(np.arange(len(token_ids)), lengths)
    start = tok_ptr[:-1][record] + (np.arange(total) - ptr[:-1][record])
    if n == 1:
        gram = flat[start]
    else:
        vocab = int(flat.max()) + 1
        gram = flat[start] * vocab + flat[start + 1]
    # k-th occurrence of the same gram inside one record: rank within (record, gram) groups.
    order = np.lexsort((np.arange(total), gram, record))
    g_sorted, r_sorted = gram[order], record[order]
    new_group = np.ones(total, bool)
    new_group[1:] = (g_sorted[1:] != g_sorted[:-1]) | (r_sorted[1:] != r_sorted[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(total), 0))
    occurrence = np.empty(total, np.int64)
    occurrence[order] = np.arange(total) - group_start
    # (gram, occurrence) -> dense id; one int64 key per pair (a 1-D unique is much faster than axis=0)
    key = gram * (int(occurrence.max()) + 1) + occurrence
    _, elem = np.unique(key, return_inverse=True)
    return ptr, elem.reshape(-1).astype(np.int64)


def build_index(token_ids: list[np.ndarray], req: np.ndarray) -> RecordIndex:
    """Index records already sorted by length (token id arrays, one per record)."""
    length = np.fromiter((t.size for t in token_ids), np.int64, len(token_ids))
    if np.any(np.diff(length) < 0):
        raise ValueError("records must be sorted by length")
    max_len = req.shape[0] - 1
    if length.size and int(length.max()) > max_len:
        raise ValueError(f"req table covers lengths <= {max_len}, got {int(length.max())}")
    bi_ptr, bi = _occurrence_elements(token_ids, 2)
    uni_ptr, uni = _occurrence_elements(token_ids, 1)
    # Global order: rarest element first (ties by id), so prefixes hold rare bigrams.
    n_elems = int(bi.max()) + 1 if bi.size else 0
    freq = np.bincount(bi, minlength=n_elems)
    rank_of = np.empty(n_elems, np.int64)
    rank_of[np.lexsort((np.arange(n_elems), freq))] = np.arange(n_elems)
    bi_ranked = rank_of[bi] if bi.size else bi
    uni_sorted = uni.copy()
    _sort_segments(bi_ranked, bi_ptr)
    _sort_segments(uni_sorted, uni_ptr)

    alpha = np.where(req >= 0, req, np.iinfo(np.int64).max).min(axis=1)  # per own length
    has_partner = (req >= 0).any(axis=1)
    n_bigrams = np.diff(bi_ptr)
    own_alpha = alpha[length]
    prefix_len = np.where(has_partner[length], n_bigrams - own_alpha + 1, 0)
    prefix_len = np.clip(prefix_len, 0, n_bigrams).astype(np.int64)

    rec_of_elem = np.repeat(np.arange(length.size), np.diff(bi_ptr))
    pos_in_rec = np.arange(bi_ranked.size) - bi_ptr[:-1][rec_of_elem]
    in_prefix = pos_in_rec < prefix_len[rec_of_elem]
    p_elem, p_rec = bi_ranked[in_prefix], rec_of_elem[in_prefix]
    order = np.lexsort((p_rec, p_elem))
    p_elem, p_rec = p_elem[order], p_rec[order]
    post_ptr = np.zeros(n_elems + 1, np.int64)
    np.cumsum(np.bincount(p_elem, minlength=n_elems), out=post_ptr[1:])

    valid = req >= 0
    min_partner = np.where(valid.any(axis=1), valid.argmax(axis=1), max_len + 1).astype(np.int64)
    return RecordIndex(
        length=length, bigram_ptr=bi_ptr, bigram_elems=bi_ranked, unigram_ptr=uni_ptr,
        unigram_elems=uni_sorted, prefix_len=prefix_len, post_ptr=post_ptr,
        post_records=p_rec.astype(np.int64), req=req.astype(np.int64), min_partner_len=min_partner,
    )


@numba.njit(cache=True)
def _sort_segments(values, ptr):
    for i in range(ptr.size - 1):
        values[ptr[i] : ptr[i + 1]] = np.sort(values[ptr[i] : ptr[i + 1]])


@numba.njit(cache=True, nogil=True)
def _intersect_count(a, a_lo, a_hi, b, b_lo, b_hi):
    i, j, n = a_lo, b_lo, 0
    while i < a_hi and j < b_hi:
        if a[i] == b[j]:
            n += 1
            i += 1
            j += 1
        elif a[i] < b[j]:
            i += 1
        else:
            j += 1
    return n


@numba.njit(cache=True, nogil=True)
def _join_block(start, stop, length, bi_ptr, bi, uni_ptr, uni, prefix_len, post_ptr, post_rec,
                req, min_partner_len, first_of_len):
    """Pairs (y < x, c1, c2) for x in [start, stop) with c2 >= req[len x, len y]."""
    n_rec = length.size
    stamp = np.full(n_rec, -1, np.int64)
    cand = np.empty(n_rec, np.int64)
    out = np.empty((1024, 4), np.int64)  # rows (y, x, c1, c2), grown by doubling
    n_out = 0
    probes = 0
    n_cand = 0
    for x in range(start, stop):
        lx = length[x]
        if prefix_len[x] == 0:
            continue
        lo_len = min_partner_len[lx]
        if lo_len > lx:
            continue
        lowest_y = first_of_len[lo_len]  # records before this are too short for x
        k = 0
        for p in range(bi_ptr[x], bi_ptr[x] + prefix_len[x]):
            e = bi[p]
            plo, phi = post_ptr[e], post_ptr[e + 1]
            # postings are ascending: binary-search the first y >= lowest_y
            a, b = plo, phi
            while a < b:
                m = (a + b) // 2
                if post_rec[m] < lowest_y:
                    a = m + 1
                else:
                    b = m
            for q in range(a, phi):
                y = post_rec[q]
                if y >= x:
                    break
                probes += 1
                if stamp[y] != x:
                    stamp[y] = x
                    cand[k] = y
                    k += 1
        n_cand += k
        for i in range(k):
            y = cand[i]
            need = req[lx, length[y]]
            if need < 0:
                continue
            c2 = _intersect_count(bi, bi_ptr[x], bi_ptr[x + 1], bi, bi_ptr[y], bi_ptr[y + 1])
            if c2 < need:
                continue
            c1 = _intersect_count(uni, uni_ptr[x], uni_ptr[x + 1], uni, uni_ptr[y], uni_ptr[y + 1])
            if n_out == out.shape[0]:
                bigger = np.empty((2 * out.shape[0], 4), np.int64)
                bigger[:n_out] = out
                out = bigger
            out[n_out, 0] = y
            out[n_out, 1] = x
            out[n_out, 2] = c1
            out[n_out, 3] = c2
            n_out += 1
    out = out[:n_out].copy()
    return out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy(), out[:, 3].copy(), probes, n_cand


def first_record_of_length(length: np.ndarray, max_len: int) -> np.ndarray:
    """first[l] = first record index with length >= l (n_records if none), for l in 0..max_len+1."""
    return np.searchsorted(length, np.arange(max_len + 2), side="left").astype(np.int64)


def join_block(index: RecordIndex, start: int, stop: int) -> dict[str, np.ndarray | int]:
    """Candidate pairs for records x in [start, stop): y < x sharing a prefix bigram and
    reaching the required bigram overlap; with exact clipped counts c1, c2."""
    first = first_record_of_length(index.length, index.req.shape[0] - 1)
    y, x, c1, c2, probes, n_cand = _join_block(
        start, stop, index.length, index.bigram_ptr, index.bigram_elems, index.unigram_ptr,
        index.unigram_elems, index.prefix_len, index.post_ptr, index.post_records, index.req,
        index.min_partner_len, first,
    )
    return {"y": y, "x": x, "c1": c1, "c2": c2, "probes": int(probes), "candidates": int(n_cand)}
