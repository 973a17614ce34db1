"""Region masks for the segmentation paper's baselines (Hu et al. ECCV 2016, section 4.1).

- `segment_proposals(image_rgb, count)`: candidate region masks, the substitute for the paper's "100
  top-scoring MCG proposals" ("Classification over segmentation proposals"). MCG and CPMC cannot be
  installed, so the masks come from a selective-search-like hierarchy instead:
  1. Felzenszwalb-Huttenlocher graph segmentation (opencv-contrib `ximgproc`) of the once-smoothed image
     at each `scales` k: the base segments (a k is FH's threshold; larger k, larger segments).
  2. Per scale, hierarchical grouping as in selective search (Uijlings et al. 2013): adjacent regions
     merge by similarity = colour-histogram intersection (Lab, 25 bins a channel) + selective search's
     size and fill terms, until one region is left. Every merge is a candidate, so objects made of
     several segments and big "stuff" regions (sky, textured water) appear as masks. (Merges are batched:
     see `_merge_hierarchy`.)
  3. Candidates (base segments and merges of every scale) are pooled and ranked by boundary contrast:
     the mean Lab colour difference over the 4-neighbour pixel pairs the candidate separates (one pixel
     in, one out; the image border does not count). A real object or stuff region is bounded by colour
     edges, while a fragment of a textured region, or a merge that cuts through one, has weak boundary
     somewhere. This stands in for MCG's learned ranking. On the synthetic world's test regions (below) the
     best of the top 100 reaches IoU >= 0.5 for 99.0% of rows, against 99.2% with every candidate kept,
     41.8% in production order (the finest segments fill the top 100) and 87.3% newest merge first (about
     selective search's hierarchy level: small objects, merged early, fall out). Ties keep production
     order (scales in order; base segments, then merges).
  4. Near duplicates (IoU >= 0.95 with a better-ranked mask) and empty masks are dropped, and the first
     `count` remain, so a smaller count gives a prefix. Nothing is random: the same image gives the same
     masks in the same order.
  All candidates are unions of "atoms" (the pixels sharing every scale's label), so IoUs and boundary
  contrasts are computed on atoms, not pixels. Cost: ~25-30 ms CPU a 128x128 image on a busy 2-core
  machine (the two FH runs are ~10 ms of it). It grows with the pixel count (a 480x360 photo takes
  ~0.5-1 s), so downscale first.
  Defaults (scales 50 and 200, sigma 0.5, min_size 40 px) were chosen on the synthetic world's 128x128
  images; for other sizes scale min_size with the area.
- `grabcut_from_box(image_rgb, box, iterations)`: the "SCRC/GroundeR grabcut" baselines' foreground from a
  predicted box: OpenCV GrabCut initialised with the rectangle, foreground = definite or probable
  foreground. Degenerate cases return the box's rectangle and say so in `GrabCutResult.outcome`, so callers
  count them (never a silent substitution):
  - `FALLBACK_EMPTY_BOX`: the box lies outside the image (the mask is then empty);
  - `FALLBACK_SMALL_BOX`: the clipped box is under 2 px in a side (GrabCut needs pixels to model);
  - `FALLBACK_GRABCUT_ERROR`: cv2.grabCut raised cv2.error;
  - `FALLBACK_NO_FOREGROUND`: GrabCut labelled every pixel background (an empty mask would throw the
    box's localisation away).
  A box covering the whole image leaves GrabCut no background pixels to learn from, so it runs on the box
  shrunk by 1 px on each side (a 1-px background frame): outcome `GRABCUT_SHRUNK_BOX`, also counted.
  OpenCV's RNG (GrabCut's k-means initialisation) is seeded before each call, so results are reproducible.
- `box_mask(height, width, box)`: the rectangle mask of an inclusive pixel box, clipped to the image.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

DEFAULT_COUNT = 100
# Chosen on the synthetic world's 128x128 test images (best-of-100 coverage of the truth; module doc):
# two FH scales reach nearly what three do at two thirds of the time, and sigma 0.5 keeps thin parts.
DEFAULT_SCALES = (50, 200)
DEFAULT_SIGMA = 0.5
DEFAULT_MIN_SIZE = 40  # pixels: the smallest segment; scale it with the image (this suits ~128 px)
DUPLICATE_IOU = 0.95
HIST_BINS = 25  # per Lab channel, as in selective search

GRABCUT = "grabcut"
GRABCUT_SHRUNK_BOX = "grabcut_shrunk_full_image_box"
FALLBACK_EMPTY_BOX = "fallback_empty_box"
FALLBACK_SMALL_BOX = "fallback_small_box"
FALLBACK_GRABCUT_ERROR = "fallback_grabcut_error"
FALLBACK_NO_FOREGROUND = "fallback_no_foreground"
FALLBACKS = (FALLBACK_EMPTY_BOX, FALLBACK_SMALL_BOX, FALLBACK_GRABCUT_ERROR, FALLBACK_NO_FOREGROUND)


# ---------------------------------------------------------------------------------------------- boxes

def _clipped_box(height: int, width: int, box_xyxy_inclusive) -> tuple[int, int, int, int]:
    """Integer inclusive (x1, y1, x2, y2) clipped to the image; x2 < x1 or y2 < y1 when nothing is left."""
    x1, y1, x2, y2 = (round(float(v)) for v in box_xyxy_inclusive)
    return max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)


def box_mask(height: int, width: int, box_xyxy_inclusive) -> np.ndarray:
    """(H, W) bool, True inside the inclusive box (rounded to whole pixels, clipped to the image)."""
    x1, y1, x2, y2 = _clipped_box(height, width, box_xyxy_inclusive)
    mask = np.zeros((height, width), dtype=bool)
    if x2 >= x1 and y2 >= y1:
        mask[y1:y2 + 1, x1:x2 + 1] = True
    return mask


# -------------------------------------------------------------------------------------------- grabcut

@dataclass(frozen=True)
class GrabCutResult:
    mask: np.ndarray  # (H, W) bool
    outcome: str  # GRABCUT, GRABCUT_SHRUNK_BOX, or one of FALLBACKS (then mask is the box's rectangle)

    @property
    def fell_back(self) -> bool:
        return self.outcome in FALLBACKS


def _rgb_uint8(image_rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def grabcut_from_box(image_rgb: np.ndarray, box_xyxy_inclusive, iterations: int,
                     seed: int = 0) -> GrabCutResult:
    """GrabCut foreground inside an inclusive pixel box (x1, y1, x2, y2) of a uint8 (H, W, 3) image, with
    OpenCV's RNG seeded by `seed`; the mask is (H, W) bool. See the module doc for the outcomes."""
    image = _rgb_uint8(image_rgb)
    height, width = image.shape[:2]
    rectangle = box_mask(height, width, box_xyxy_inclusive)  # (H, W) the fallback answer
    x1, y1, x2, y2 = _clipped_box(height, width, box_xyxy_inclusive)
    if x2 < x1 or y2 < y1:
        return GrabCutResult(rectangle, FALLBACK_EMPTY_BOX)
    outcome = GRABCUT
    if (x1, y1, x2, y2) == (0, 0, width - 1, height - 1):
        # No pixel outside the box: GrabCut's background model would have no samples.
        x1, y1, x2, y2 = x1 + 1, y1 + 1, x2 - 1, y2 - 1
        outcome = GRABCUT_SHRUNK_BOX
    if x2 - x1 + 1 < 2 or y2 - y1 + 1 < 2:
        return GrabCutResult(rectangle, FALLBACK_SMALL_BOX)
    labels = np.zeros((height, width), dtype=np.uint8)  # (H, W) GC_BGD / GC_FGD / GC_PR_BGD / GC_PR_FGD
    background_model = np.zeros((1, 65), dtype=np.float64)  # OpenCV's GMM buffers: 5 components x 13
    foreground_model = np.zeros((1, 65), dtype=np.float64)
    cv2.setRNGSeed(seed)  # GrabCut's GMM initialisation runs k-means on OpenCV's RNG
    try:
        cv2.grabCut(image, labels, (x1, y1, x2 - x1 + 1, y2 - y1 + 1), background_model, foreground_model,
                    int(iterations), cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return GrabCutResult(rectangle, FALLBACK_GRABCUT_ERROR)
    foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if not foreground.any():
        return GrabCutResult(rectangle, FALLBACK_NO_FOREGROUND)
    return GrabCutResult(foreground, outcome)


# ---------------------------------------------------------------------------------- segment proposals

def _neighbour_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-neighbour pixel pairs across label changes: (first label, second label, flat index of first and
    second pixel) as (P,), (P,), (2, P)."""
    height, width = labels.shape
    flat = np.arange(height * width).reshape(height, width)
    right = labels[:, :-1] != labels[:, 1:]  # (H, W-1)
    down = labels[:-1, :] != labels[1:, :]  # (H-1, W)
    first = np.concatenate([flat[:, :-1][right], flat[:-1, :][down]])
    second = np.concatenate([flat[:, 1:][right], flat[1:, :][down]])
    flat_labels = labels.ravel()
    return flat_labels[first], flat_labels[second], np.stack([first, second])


def _region_features(labels: np.ndarray, n_regions: int, lab_bins: np.ndarray):
    """Per region: pixel count (R,), normalised Lab histogram (R, 3*BINS), bbox (R, 4) x1 y1 x2 y2."""
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n_regions).astype(np.float64)
    # lab_bins (H*W, 3) holds each channel's bin already offset by channel * BINS
    hist_index = (flat[:, None] * (3 * HIST_BINS) + lab_bins).ravel()
    hists = np.bincount(hist_index, minlength=n_regions * 3 * HIST_BINS).reshape(n_regions, 3 * HIST_BINS)
    hists = hists / (3.0 * sizes[:, None])  # each row sums to 1
    slices = ndimage.find_objects(labels + 1)  # per region (rows, cols) slices of its bounding box
    bboxes = np.array([(c.start, r.start, c.stop - 1, r.stop - 1) for r, c in slices], dtype=np.float64)
    return sizes, hists, bboxes


def _pair_similarity(a: np.ndarray, b: np.ndarray, sizes, hists, bboxes, image_area: float) -> np.ndarray:
    """Selective search's colour + size + fill similarity of regions a[i] and b[i], (N,)."""
    colour = np.minimum(hists[a], hists[b]).sum(axis=1)  # histogram intersection, in [0, 1]
    pair_sizes = sizes[a] + sizes[b]
    union_low = np.minimum(bboxes[a, :2], bboxes[b, :2])  # (N, 2) the union box's x1 y1
    union_high = np.maximum(bboxes[a, 2:], bboxes[b, 2:])  # (N, 2) its x2 y2
    union_area = (union_high[:, 0] - union_low[:, 0] + 1) * (union_high[:, 1] - union_low[:, 1] + 1)
    size = 1.0 - pair_sizes / image_area  # merge small regions first, so that no region grows alone
    fill = 1.0 - (union_area - pair_sizes) / image_area  # prefer merges that fill each other's holes
    return colour + size + fill


def _merge_hierarchy(labels: np.ndarray, n_regions: int, lab_bins: np.ndarray) -> np.ndarray:
    """Hierarchical grouping of one segmentation: (M <= n_regions - 1, n_regions) bool, row t = the
    segments in the region made by merge t, in merge order.

    Selective search merges the single most similar adjacent pair at a time. Here every round merges all
    pairs that are each other's most similar neighbour at once (Borůvka-style), which is vectorised over
    the region graph: a few dozen numpy rounds instead of one Python step per merge (that version cost
    ~3x more here, for the same coverage on the synthetic world). It approximates the one-at-a-time order:
    the globally most similar pair is always among a round's merges, so every round makes progress, but a
    region next to another merge may join a different partner than strict greedy order would give it.
    """
    height, width = labels.shape
    image_area = float(height * width)
    capacity = max(2 * n_regions - 1, 1)  # base segments, then one new region per merge
    base_sizes, base_hists, base_boxes = _region_features(labels, n_regions, lab_bins)
    sizes = np.zeros(capacity)
    sizes[:n_regions] = base_sizes
    hists = np.zeros((capacity, base_hists.shape[1]))
    hists[:n_regions] = base_hists
    bboxes = np.zeros((capacity, 4))
    bboxes[:n_regions] = base_boxes
    members = np.zeros((capacity, n_regions), dtype=bool)  # row r: the base segments in region r
    members[np.arange(n_regions), np.arange(n_regions)] = True
    first, second, _ = _neighbour_pairs(labels)
    edges = np.unique(np.minimum(first, second) * capacity + np.maximum(first, second))  # a * capacity + b
    n_made = n_regions
    while len(edges):
        low, high = np.divmod(edges, capacity)  # (E,), (E,) adjacent regions, low < high
        similarity = _pair_similarity(low, high, sizes, hists, bboxes, image_area)
        rank = np.lexsort((high, low, -similarity))  # most similar first; ties by ids, so deterministic
        low, high = low[rank], high[rank]
        # each region's most similar neighbour: the first ranked edge it is on
        best_edge = np.full(capacity, len(rank))
        np.minimum.at(best_edge, np.concatenate([low, high]), np.tile(np.arange(len(rank)), 2))
        position = np.arange(len(rank))
        mutual = (best_edge[low] == position) & (best_edge[high] == position)  # disjoint pairs
        keep_low, keep_high = low[mutual], high[mutual]
        new = np.arange(n_made, n_made + len(keep_low))
        n_made += len(keep_low)
        total = sizes[keep_low] + sizes[keep_high]
        hists[new] = (hists[keep_low] * sizes[keep_low, None] + hists[keep_high] * sizes[keep_high, None]) \
            / total[:, None]
        sizes[new] = total
        bboxes[new, :2] = np.minimum(bboxes[keep_low, :2], bboxes[keep_high, :2])
        bboxes[new, 2:] = np.maximum(bboxes[keep_low, 2:], bboxes[keep_high, 2:])
        members[new] = members[keep_low] | members[keep_high]
        # re-point the graph at the merged regions and drop the edges inside them
        renamed = np.arange(capacity)
        renamed[keep_low] = new
        renamed[keep_high] = new
        low, high = renamed[low], renamed[high]
        outside = low != high
        low, high = low[outside], high[outside]
        edges = np.unique(np.minimum(low, high) * capacity + np.maximum(low, high))
    return members[n_regions:n_made]


def _graph_segmentation(smoothed: np.ndarray, k: float, min_size: int) -> tuple[np.ndarray, int]:
    """Felzenszwalb-Huttenlocher labels (H, W) int64 0..R-1 and R, on an already smoothed image."""
    segmenter = cv2.ximgproc.segmentation.createGraphSegmentation(0.0, float(k), int(min_size))
    labels = segmenter.processImage(smoothed).astype(np.int64)
    _, labels = np.unique(labels, return_inverse=True)  # compact ids, in case OpenCV leaves gaps
    labels = labels.reshape(smoothed.shape[:2])
    return labels, int(labels.max()) + 1


def _first_distinct(atom_members: np.ndarray, atom_sizes: np.ndarray, order: np.ndarray,
                    count: int) -> list[int]:
    """Walk candidates in rank order, keeping one unless it is empty or its IoU with a kept one is >=
    DUPLICATE_IOU; stop at `count` kept. Returns the kept candidates' indices."""
    areas = (atom_members * atom_sizes).sum(axis=1).tolist()  # (K,) pixels
    kept: list[int] = []
    kept_by_area: list[tuple[float, int]] = []  # sorted (area, candidate) of the kept ones
    for candidate in order.tolist():
        area = areas[candidate]
        if area == 0:
            continue
        # IoU <= min(area) / max(area), so only kept masks within 5% of this area can be duplicates
        start = bisect.bisect_left(kept_by_area, (DUPLICATE_IOU * area, -1))
        stop = bisect.bisect_right(kept_by_area, (area / DUPLICATE_IOU, len(areas)))
        similar = [other for _, other in kept_by_area[start:stop]]
        if similar:
            both = atom_members[similar] & atom_members[candidate]  # (S, A)
            intersection = (both * atom_sizes).sum(axis=1)
            union = np.array([areas[other] for other in similar]) + area - intersection
            if (intersection >= DUPLICATE_IOU * union).any():
                continue
        kept.append(candidate)
        bisect.insort(kept_by_area, (area, candidate))
        if len(kept) == count:
            break
    return kept


def _boundary_contrast(atom_members: np.ndarray, atom_image: np.ndarray, n_atoms: int,
                       lab: np.ndarray) -> np.ndarray:
    """(K,) mean Lab difference over the 4-neighbour pixel pairs each candidate separates (one pixel in,
    one out); 0 for a candidate with no boundary inside the image (the whole image)."""
    atom_a, atom_b, pixel_pairs = _neighbour_pairs(atom_image)
    lab_flat = lab.reshape(-1, 3).astype(np.float32)
    contrast = np.linalg.norm(lab_flat[pixel_pairs[0]] - lab_flat[pixel_pairs[1]], axis=1)  # (P,)
    pair_key = np.minimum(atom_a, atom_b) * n_atoms + np.maximum(atom_a, atom_b)
    unique_pairs, pair_of = np.unique(pair_key, return_inverse=True)
    pair_contrast = np.bincount(pair_of, weights=contrast).astype(np.float32)  # (Q,) summed per atom pair
    pair_length = np.bincount(pair_of).astype(np.float32)  # (Q,) pixel pairs per atom pair
    low, high = np.divmod(unique_pairs, n_atoms)
    cut = (atom_members[:, low] != atom_members[:, high]).astype(np.float32)  # (K, Q) pairs it separates
    # einsum, not @: OpenBLAS's threaded gemv took ~7 ms at this size on a busy 2-core machine, einsum 0.4
    cut_length = np.einsum("kq,q->k", cut, pair_length)
    cut_contrast = np.einsum("kq,q->k", cut, pair_contrast)
    return np.where(cut_length > 0, cut_contrast / np.maximum(cut_length, 1.0), 0.0)


def segment_proposals(image_rgb: np.ndarray, count: int = DEFAULT_COUNT, scales=DEFAULT_SCALES,
                      sigma: float = DEFAULT_SIGMA, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """uint8 (H, W, 3) RGB image -> (K <= count, H, W) bool candidate masks, best-ranked first (module doc)."""
    image = _rgb_uint8(image_rgb)
    height, width = image.shape[:2]
    if count <= 0:
        return np.zeros((0, height, width), dtype=bool)
    # Smooth once and segment every scale with sigma 0: FH's own smoothing would repeat per scale.
    smoothed = cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image
    lab = cv2.cvtColor(smoothed, cv2.COLOR_RGB2Lab)  # (H, W, 3) uint8, each channel scaled to 0..255
    lab_bins = (lab.reshape(-1, 3).astype(np.int64) * HIST_BINS) // 256 + np.arange(3) * HIST_BINS  # (H*W, 3)

    segmentations = [_graph_segmentation(smoothed, k, min_size) for k in scales]
    # Atoms: pixels sharing every scale's label. Each candidate is a union of atoms.
    key = np.zeros(height * width, dtype=np.int64)  # (H*W,) the pixel's labels as one mixed-radix number
    n_keys = 1
    for labels, n_regions in segmentations:
        key = key * n_regions + labels.ravel()
        n_keys *= n_regions
    if n_keys <= 16 * height * width:  # compact through a lookup table: no sort needed
        present = np.zeros(n_keys, dtype=bool)
        present[key] = True
        atoms = (np.cumsum(present) - 1)[key]  # (H*W,) atom id per pixel
    else:
        _, atoms = np.unique(key, return_inverse=True)
    n_atoms = int(atoms.max()) + 1
    atom_sizes = np.bincount(atoms, minlength=n_atoms)  # (A,)
    atom_pixel = np.zeros(n_atoms, dtype=np.int64)
    atom_pixel[atoms] = np.arange(height * width)  # some pixel of each atom: any one gives its labels

    candidates = []  # each (K_s, A) bool over atoms
    for labels, n_regions in segmentations:
        atom_segment = labels.ravel()[atom_pixel]  # (A,) the segment each atom lies in at this scale
        segment_members = np.concatenate([np.eye(n_regions, dtype=bool),
                                          _merge_hierarchy(labels, n_regions, lab_bins)])  # (2R-1, R)
        candidates.append(segment_members[:, atom_segment])
    atom_members = np.concatenate(candidates)  # (K, A)
    # Exact duplicates (the same segment found at several scales): keep the first occurrence.
    seen: set[bytes] = set()
    unique_rows = []
    for index, row in enumerate(np.packbits(atom_members, axis=1)):
        if (key_bytes := row.tobytes()) not in seen:
            seen.add(key_bytes)
            unique_rows.append(index)
    atom_members = atom_members[unique_rows]
    atom_image = atoms.reshape(height, width)
    score = _boundary_contrast(atom_members, atom_image, n_atoms, lab)
    order = np.argsort(-score, kind="stable")  # ties keep production order
    kept = _first_distinct(atom_members, atom_sizes, order, count)
    return atom_members[kept][:, atom_image]  # (K, H, W)
