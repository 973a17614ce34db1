"""ReferIt (ReferItGame on IAPR TC-12) as Hu et al. release it (text_objseg / SCRC).

Files, found by their released names anywhere under the dataset root, so the
official extracted layout, /work/shared/data/referit (annotations/, splits/) and
the synthetic world all read the same way:

- referit_query_<split>.json   {"<img>_<k>": [expression, ...]}      (required)
- referit_bbox.json            {"<img>_<k>": [xmin, ymin, xmax, ymax]} 0-based, inclusive (required)
- referit_imsize.json          {"<img>.jpg": [width, height]}          (required)
- referit_imcrop.json          {"<img>.jpg": ["<img>_<k>", ...]}       (optional cross-check)
- referit_<split>_imlist.txt   one image id per line                   (optional cross-check)
- referit_expression_kinds.json {"<img>_<k>": [kind, ...]}             (optional, synthetic world)
- images/<img>.jpg, mask/<img>_<k>.mat (key segimg_t, region = pixels equal to 0),
  EdgeBox proposals <img>.txt (100 rows "x1 y1 x2 y2", numpy savetxt floats).

Bad records are counted skips (reason in brackets), never silent drops:
a region with no box [region_without_box], an image with no size
[image_without_size], a box with x2 < x1 or y2 < y1 [nonpositive_box_size], a box
beyond its image [box_outside_image], an empty or whitespace expression
[empty_expression], a region id that is not "<img>_<k>" with a numeric k
[malformed_region_id], and, when the optional files exist, an image outside the
split's image list [image_not_in_split] or a region missing from the image's
imcrop list [region_not_in_imcrop]. Skips count expressions (rows), so rows +
skips = the number of expressions in the query file (`skips.read`, unit
"expressions"). Whether each optional cross-check was made goes into `checks`
(a missing split list or imcrop file is logged and reported, not silent).
Unreadable files, values of the wrong type (a box that is not 4 finite numbers,
a size that is not 2 positive whole numbers) and a key listed twice in one JSON
object are DataError naming the file and the record.

An expression whose text has no word (e.g. '...') is kept, with empty tokens:
it is a real annotation and the released counts include it.
"""
from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from refexp.data.schema import to_frame
from refexp.data.skips import DataError, SkipCounter, numbers, read_json
from refexp.text.tokenize import tokenize

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "trainval", "test", "all")
BBOX_FILE = "referit_bbox.json"
IMSIZE_FILE = "referit_imsize.json"
IMCROP_FILE = "referit_imcrop.json"
KINDS_FILE = "referit_expression_kinds.json"
IMAGE_DIR_NAMES = ("images",)
MASK_DIR_NAMES = ("mask", "masks")
PROPOSAL_DIR_NAMES = ("proposals", "edgeboxes", "referit_edgeboxes_top100")
MASK_KEY = "segimg_t"


def query_file(split: str) -> str:
    return f"referit_query_{split}.json"


def imlist_file(split: str) -> str:
    return f"referit_{split}_imlist.txt"


@dataclass
class ReferItLayout:
    """Where the released files sit under `root`, found in one walk of the tree.

    Directories named like image, mask or proposal folders are recorded and not
    descended into, so discovery stays cheap on the full dataset (120k files).
    """

    root: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    image_dirs: list[Path] = field(default_factory=list)
    mask_dirs: list[Path] = field(default_factory=list)
    proposal_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def discover(cls, root: str | Path) -> ReferItLayout:
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "ReferIt root directory not found")
        layout = cls(root)
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            for name in filenames:
                if name.startswith(("referit_", "vocabulary_")):
                    layout.files.setdefault(name, []).append(here / name)
            keep = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                if d in IMAGE_DIR_NAMES:
                    layout.image_dirs.append(here / d)
                elif d in MASK_DIR_NAMES:
                    layout.mask_dirs.append(here / d)
                elif d in PROPOSAL_DIR_NAMES:
                    layout.proposal_dirs.append(here / d)
                else:
                    keep.append(d)
            dirnames[:] = keep
        # os.walk is top-down, so each list is already shallowest first.
        return layout

    def find(self, name: str) -> Path | None:
        paths = self.files.get(name, [])
        if len(paths) > 1:
            log.warning("%s found %d times under %s; using %s", name, len(paths), self.root, paths[0])
        return paths[0] if paths else None

    def require(self, name: str) -> Path:
        path = self.find(name)
        if path is None:
            raise DataError(self.root, f"required file {name} not found anywhere under {self.root}")
        return path

    def image_files(self) -> dict[str, Path]:
        """'<img>.jpg' -> path, over all image folders (shallowest wins)."""
        found: dict[str, Path] = {}
        for d in self.image_dirs:
            for name in os.listdir(d):
                found.setdefault(name, d / name)
        return found

    def mask_path(self, region_id: str) -> Path:
        for d in self.mask_dirs:
            path = d / f"{region_id}.mat"
            if path.is_file():
                return path
        raise DataError(self.root, f"no mask file {region_id}.mat under {self.root}", record=region_id)

    def proposals_path(self, image_id: str) -> Path:
        for d in self.proposal_dirs:
            path = d / f"{image_id}.txt"
            if path.is_file():
                return path
        raise DataError(self.root, f"no proposals file {image_id}.txt under {self.root}", record=image_id)


def mask_path(root: str | Path, region_id: str) -> Path:
    """Path of mask/<region_id>.mat under `root` (for many look-ups, reuse a ReferItLayout)."""
    return ReferItLayout.discover(root).mask_path(region_id)


def proposals_path(root: str | Path, image_id: str) -> Path:
    return ReferItLayout.discover(root).proposals_path(image_id)


def _read_mapping(path: Path) -> dict:
    data = read_json(path, unique_keys=True)
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object at top level, got {type(data).__name__}")
    return data


def _read_imlist(path: Path) -> set[str]:
    try:
        # utf-8-sig: a BOM would make the first id "\ufeff<id>" and drop that image from the split.
        return {line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable image list: {e}") from e


def _read_imcrop(path: Path) -> dict[str, set[str]]:
    imcrop = {}
    for image_name, regions in _read_mapping(path).items():
        if not (isinstance(regions, list) and all(isinstance(r, str) for r in regions)):
            raise DataError(path, f"expected a list of region ids, got {regions!r}", record=image_name)
        imcrop[image_name] = set(regions)
    return imcrop


# ASCII digits only (\d takes any script); no path separator, as the id names mask/<id>.mat.
_REGION_ID = re.compile(r"([^/\\\n]+)_([0-9]+)")
MAX_SIDE = 1 << 20  # pixels: past this a size is corrupt, and int64 pixel counts could overflow


def _whole(value) -> bool:
    return float(value).is_integer()


def load(root: str | Path, split: str, skips: SkipCounter | None = None,
         checks: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per (image, region, expression) of `split`, in the common schema.

    checks, if given, receives split_list_cross_checked/<split> and
    imcrop_cross_checked: whether the optional cross-check files were there.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown ReferIt split {split!r}; expected one of {SPLITS}")
    skips = SkipCounter() if skips is None else skips
    checks = {} if checks is None else checks
    layout = ReferItLayout.discover(root)
    query_path = layout.require(query_file(split))
    bbox_path = layout.require(BBOX_FILE)
    imsize_path = layout.require(IMSIZE_FILE)
    queries = _read_mapping(query_path)
    boxes = _read_mapping(bbox_path)
    sizes = _read_mapping(imsize_path)

    imcrop_path = layout.find(IMCROP_FILE)
    imcrop = _read_imcrop(imcrop_path) if imcrop_path is not None else None
    imlist_path = layout.find(imlist_file(split))
    imlist = _read_imlist(imlist_path) if imlist_path is not None else None
    # The released layout has both; without them the check is not made, and that is reported.
    checks[f"split_list_cross_checked/{split}"] = imlist is not None
    checks["imcrop_cross_checked"] = imcrop is not None
    if imlist is None:
        log.warning("ReferIt %s: no %s under %s; images are not cross-checked against the split list",
                    split, imlist_file(split), layout.root)
    if imcrop is None:
        log.warning("ReferIt: no %s under %s; regions are not cross-checked against it", IMCROP_FILE, layout.root)
    kinds_path = layout.find(KINDS_FILE)
    kinds = _read_mapping(kinds_path) if kinds_path is not None else None
    image_files = layout.image_files()

    cols: dict[str, list] = {c: [] for c in (
        "image_id", "image_path", "image_width", "image_height", "region_id",
        "x1", "y1", "x2", "y2", "expression", "tokens", "kind")}
    for region_id, expressions in queries.items():
        if not isinstance(expressions, list):
            raise DataError(query_path, f"expected a list of expressions, got {type(expressions).__name__}",
                            record=region_id)
        n = len(expressions)
        skips.read("expressions", n)
        match = _REGION_ID.fullmatch(region_id)
        if match is None:
            skips.add("malformed_region_id", query_path, region_id, n)
            continue
        image_id = match.group(1)
        box = boxes.get(region_id)
        if box is None:
            skips.add("region_without_box", query_path, region_id, n)
            continue
        if not numbers(box, 4):
            raise DataError(bbox_path, f"expected 4 finite numbers [xmin, ymin, xmax, ymax], got {box!r}",
                            record=region_id)
        image_name = f"{image_id}.jpg"
        size = sizes.get(image_name)
        if size is None:
            skips.add("image_without_size", imsize_path, image_name, n)
            continue
        if not (numbers(size, 2) and all(0 < v <= MAX_SIDE and _whole(v) for v in size)):
            raise DataError(imsize_path, f"expected [width, height] in positive whole pixels (at most {MAX_SIDE}), "
                            f"got {size!r}",
                            record=image_name)
        if imlist is not None and image_id not in imlist:
            skips.add("image_not_in_split", imlist_path, region_id, n)
            continue
        if imcrop is not None and region_id not in imcrop.get(image_name, ()):
            skips.add("region_not_in_imcrop", imcrop_path, region_id, n)
            continue
        x1, y1, x2, y2 = box
        width, height = int(size[0]), int(size[1])
        if x2 < x1 or y2 < y1:
            skips.add("nonpositive_box_size", bbox_path, region_id, n)
            continue
        if x1 < 0 or y1 < 0 or x2 > width - 1 or y2 > height - 1:
            skips.add("box_outside_image", bbox_path, region_id, n)
            continue
        region_kinds = kinds.get(region_id) if kinds is not None else None
        if region_kinds is not None and not (isinstance(region_kinds, list) and len(region_kinds) == n
                                             and all(isinstance(k, str) for k in region_kinds)):
            raise DataError(kinds_path, f"expected a list of {n} kind names, got {region_kinds!r}", record=region_id)
        image_path = image_files.get(image_name)
        for i, expression in enumerate(expressions):
            if not isinstance(expression, str):
                raise DataError(query_path, f"expression {i} is not a string: {expression!r}", record=region_id)
            if not expression.strip():
                skips.add("empty_expression", query_path, f"{region_id}[{i}]")
                continue
            cols["image_id"].append(image_id)
            cols["image_path"].append(None if image_path is None else str(image_path))
            cols["image_width"].append(width)
            cols["image_height"].append(height)
            cols["region_id"].append(region_id)
            cols["x1"].append(x1)
            cols["y1"].append(y1)
            cols["x2"].append(x2)
            cols["y2"].append(y2)
            cols["expression"].append(expression)
            cols["tokens"].append(tokenize(expression))
            cols["kind"].append(None if region_kinds is None else region_kinds[i])
    cols["split"] = [split] * len(cols["image_id"])
    log.info("ReferIt %s: %d expressions from %s (%d skipped)",
             split, len(cols["image_id"]), query_path, skips.total)
    return to_frame(pd.DataFrame(cols))


RELEASED_VOCABULARY = "vocabulary_scrc.txt"
# Special tokens of the released vocabularies (SCRC's starts with <unk>; text_objseg's with <pad> <go> <eos> <unk>).
RELEASED_SPECIALS = ("<unk>", "<pad>", "<go>", "<eos>", "<bos>")


def released_vocabulary(root: str | Path) -> tuple[Path, list[str]] | None:
    """SCRC's released 8,800-word vocabulary (vocab/vocabulary_scrc.txt) as (file, words without the
    special tokens), or None when the layout has none. A repeated word is a DataError. The release's
    tokenizer keeps runs of punctuation as tokens (', "', '. .'); they stay entries that ours never emits."""
    layout = ReferItLayout.discover(root)
    path = layout.find(RELEASED_VOCABULARY)
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is not part of word 1
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"unreadable vocabulary ({err})") from None
    words, seen = [], set()
    for number, line in enumerate(lines, 1):
        word = line.strip()
        if not word or word in RELEASED_SPECIALS:
            continue
        if word in seen:
            raise DataError(path, f"word {word!r} is listed twice", record=f"line {number}")
        seen.add(word)
        words.append(word)
    if not words:
        raise DataError(path, "the vocabulary lists no word")
    return path, words


def read_mask(path: str | Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean (H, W) region mask from a ReferIt .mat: True where segimg_t == 0.

    image_size is (width, height) from referit_imsize.json; a mask of another
    size is a DataError naming the file.
    """
    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError as e:
        raise DataError(path, "mask file not found") from e
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError on corrupt files
        raise DataError(path, f"unreadable .mat file: {e}") from e
    if MASK_KEY not in mat:
        raise DataError(path, f"no key {MASK_KEY!r} in .mat (keys: {sorted(k for k in mat if not k.startswith('__'))})")
    seg = np.asarray(mat[MASK_KEY])
    if not (np.issubdtype(seg.dtype, np.number) or seg.dtype == bool):  # a cell or struct array
        raise DataError(path, f"{MASK_KEY} holds {seg.dtype} values, expected a numeric image")
    if seg.ndim != 2:
        raise DataError(path, f"{MASK_KEY} has shape {seg.shape}, expected (height, width)")
    if np.iscomplexobj(seg) or (seg.dtype.kind == "f" and not np.isfinite(seg).all()):
        raise DataError(path, f"{MASK_KEY} holds complex or non-finite values ({seg.dtype})")  # NaN != 0: a silent hole
    if image_size is not None:
        width, height = image_size
        if seg.shape != (height, width):
            raise DataError(path, f"mask is {seg.shape[1]}x{seg.shape[0]} (WxH) but the image is {width}x{height}")
    return seg == 0


def load_proposals(path: str | Path) -> np.ndarray:
    """EdgeBox proposals (N, 4) int64 rows x1 y1 x2 y2, from numpy-savetxt text."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError(path, "proposals file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable proposals file: {e}") from e
    if not text.strip():
        return np.zeros((0, 4), dtype=np.int64)
    try:
        boxes = np.loadtxt(io.StringIO(text), ndmin=2)
    except ValueError as e:
        raise DataError(path, f"malformed proposals: {e}") from e
    if boxes.shape[1] != 4:
        raise DataError(path, f"expected 4 columns x1 y1 x2 y2, got {boxes.shape[1]}")
    if not np.isfinite(boxes).all():
        raise DataError(path, "non-finite proposal coordinates")
    inverted = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if inverted.size:  # x2 < x1 or y2 < y1: every IoU with it would be meaningless
        raise DataError(path, f"proposal has x2 < x1 or y2 < y1: {boxes[inverted[0]].tolist()}",
                        record=f"line {inverted[0] + 1}")
    bad = np.flatnonzero(~((boxes == np.round(boxes)) & (np.abs(boxes) <= MAX_SIDE)).all(axis=1))
    if bad.size:  # astype(int64) would silently truncate a fraction or wrap a huge value
        raise DataError(path, f"proposal coordinates are not whole pixels within {MAX_SIDE}: {boxes[bad[0]].tolist()}",
                        record=f"line {bad[0] + 1}")
    return boxes.astype(np.int64)  # as SCRC reads them (values are whole numbers)
