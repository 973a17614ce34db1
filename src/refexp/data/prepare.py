"""Raw layouts -> common-schema tables (parquet) and train-only vocabularies.

prepare_referit: data/raw/<name> (ReferIt layout) -> tuples.parquet + vocab.txt
prepare_coco:    data/raw/<name> (COCO 2014 layout) -> captions.parquet + instances.parquet + vocab.txt
prepare_refer:   data/raw/<name> (refer API layout) -> tuples.parquet (with masks) + vocab.txt

Every record read is accounted for in the metrics, in one unit per table:
  input/<unit> = rows kept + every skipped/<reason> of that unit
(prepare_referit and prepare_refer: unit expressions, rows = the <split>/tuples, skips
`skipped/<reason>`; prepare_coco: units captions and instances, skips `skipped/<unit>/<reason>`).
Rows kept with a missing or unusable field are counted apart, in rows:
kept_with_defect/[<unit>/]<reason> (mask_missing, mask_empty, image_missing,
image_unreadable, image_truncated, image_size_mismatch); such a field is <NA>.
checks/<name> states whether a cross-check could be made (a split list, the
imcrop file, the image and mask folders, the refer splits' images; false = the
layout lacks the file, or the split is not by image, and the check was not made).
A split left with no rows at all is a DataError naming its file, and so is an
image listed in two ReferIt splits or in two splits of a refer split_by that
splits by image.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd
from PIL import Image

from refexp.config import ConfigError, DatasetConfig
from refexp.data import coco, refer, referit
from refexp.data.coco import encode_mask
from refexp.data.schema import to_frame
from refexp.data.skips import DataError, SkipCounter
from refexp.text.vocab import SPECIALS, Vocab

log = logging.getLogger(__name__)

REFERIT_SPLITS = ("train", "val", "test")
DEFECT = "kept with a defect"
_TAIL_BYTES = 1024  # where a complete JPEG's end marker / PNG's IEND chunk must be


def _repo_relative(paths: pd.Series, repo_root: Path) -> pd.Series:
    root = os.path.abspath(repo_root)
    return paths.map(lambda p: os.path.relpath(os.path.abspath(p), root) if isinstance(p, str) else pd.NA)


def _clip_tokens(df: pd.DataFrame, column: str, max_tokens: int) -> int:
    """Truncate token lists to max_tokens; return how many were truncated (kept, not dropped)."""
    too_long = df[column].map(len) > max_tokens
    df.loc[too_long, column] = df.loc[too_long, column].map(lambda t: list(t[:max_tokens]))
    return int(too_long.sum())


def _drop_tokenless(df: pd.DataFrame, column: str, skips: SkipCounter, file: str | Path,
                    id_column: str) -> pd.DataFrame:
    empty = df[column].map(len) == 0
    for record in df.loc[empty, id_column]:
        skips.add("no_tokens", file, str(record))
    return df.loc[~empty].reset_index(drop=True)


def _require_rows(df: pd.DataFrame, file: Path, what: str, unit: str, skips: SkipCounter) -> None:
    # An empty split would train or evaluate on nothing without a word; stop here instead.
    if df.empty:
        raise DataError(file, f"{what} has no {unit} left: {skips.inputs[unit]} read, "
                              f"skipped: {skips.summary()}")


def _vocab_metrics(vocab: Vocab, df: pd.DataFrame, column: str) -> dict:
    metrics = {"vocab/size": len(vocab)}
    for split, part in df.groupby("split"):
        tokens = [t for ts in part[column] for t in ts]
        unknown = sum(1 for i in vocab.encode(tokens) if i == vocab.unk_id)
        metrics[f"{split}/unk_rate"] = round(unknown / max(len(tokens), 1), 6)
    return metrics


def _file_is_complete(path: Path, fmt: str | None) -> bool:
    """A JPEG ends with its EOI marker, a PNG with its IEND chunk (trailing padding allowed).
    PIL opens a truncated file without complaint and fails only when decoding it, in training."""
    marker = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}.get(fmt or "")
    if marker is None:
        return True
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - _TAIL_BYTES, 0))
        return marker in f.read()


def image_defect(path: Path, width: int, height: int) -> str | None:
    """Why an image file cannot stand for its annotations, or None: image_missing,
    image_unreadable (PIL cannot identify it), image_truncated, image_size_mismatch
    (not the annotated width x height, so boxes and masks would not line up)."""
    try:
        with Image.open(path) as im:
            fmt, size = im.format, im.size
        complete = _file_is_complete(path, fmt)
    except FileNotFoundError:
        return "image_missing"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "image_unreadable"
    if not complete:
        return "image_truncated"
    if size != (width, height):
        return "image_size_mismatch"
    return None


def _usable_images(df: pd.DataFrame, defects: SkipCounter, cache: dict, where: str | Path) -> pd.Series:
    """df's image_path with every image that is missing or unusable set to <NA>, counted in rows
    under its reason (file: the image, or `where` for a missing one). Each image file is opened
    once (cache: (path, width, height) -> reason)."""
    reasons = []
    for path, w, h in zip(df["image_path"], df["image_width"], df["image_height"]):
        path = path if isinstance(path, str) else None
        key = (path, int(w), int(h))
        if key not in cache:
            cache[key] = "image_missing" if path is None else image_defect(Path(path), int(w), int(h))
        reasons.append(cache[key])
    reasons = pd.Series(reasons, index=df.index, dtype=object)
    bad = reasons.notna()
    per_image = (pd.DataFrame({"reason": reasons[bad], "image_id": df.loc[bad, "image_id"],
                               "path": df.loc[bad, "image_path"].astype(object)})
                 .groupby(["reason", "image_id"], sort=False).agg(n=("reason", "size"), path=("path", "first")))
    for (reason, image_id), n, path in zip(per_image.index, per_image["n"], per_image["path"]):
        defects.add(reason, path if isinstance(path, str) else where, f"image {image_id}", int(n))
    return df["image_path"].where(~bad, None)


def _referit_masks(layout: referit.ReferItLayout, df: pd.DataFrame, defects: SkipCounter) -> pd.Series:
    """mask_rle per row from mask/<region>.mat where the layout has masks (annotation-only copies have none)."""
    if not layout.mask_dirs:
        return pd.Series(pd.NA, index=df.index, dtype="string")
    rows = df["region_id"].value_counts()
    rles: dict[str, str] = {}
    for row in df.drop_duplicates("region_id").itertuples():
        try:
            path = layout.mask_path(row.region_id)
        except DataError:
            defects.add("mask_missing", layout.root, row.region_id, n=int(rows[row.region_id]))
            continue
        mask = referit.read_mask(path, (int(row.image_width), int(row.image_height)))
        if not mask.any():  # no pixel is the region: nothing to segment
            defects.add("mask_empty", path, row.region_id, n=int(rows[row.region_id]))
            continue
        rles[row.region_id] = encode_mask(mask)
    return df["region_id"].map(rles).astype("string")


def _disjoint_splits(parts: dict[str, pd.DataFrame], layout: referit.ReferItLayout) -> None:
    """An image in two splits would put test images into training; the released splits are disjoint."""
    seen: dict[str, str] = {}
    for split, part in parts.items():
        for image_id in part["image_id"].unique():
            other = seen.setdefault(image_id, split)
            if other != split:
                raise DataError(layout.require(referit.query_file(split)),
                                f"image {image_id} is in both the {other} and the {split} split", record=image_id)


def referit_vocab(raw_dir: Path, train_tokens: pd.Series, min_word_count: int, source: str) -> tuple[Vocab, str]:
    """The released SCRC vocabulary when `source` is "released" and the layout has it, else the
    train split's words; and a description of which it is."""
    if source == "released":
        released = referit.released_vocabulary(raw_dir)
        if released is not None:
            path, words = released
            return Vocab(SPECIALS + tuple(words)), f"released {path.name} ({len(words)} words)"
    return Vocab.build(train_tokens, min_word_count), f"train split (words seen >= {min_word_count} times)"


def prepare_referit(raw_dir: Path, dataset: str, min_word_count: int, max_tokens: int,
                    repo_root: Path = Path("."), vocabulary: str = "train") -> tuple[pd.DataFrame, Vocab, dict]:
    skips, defects, checks = SkipCounter(), SkipCounter(kind=DEFECT), {}
    layout = referit.ReferItLayout.discover(raw_dir)
    parts = {}
    for split in REFERIT_SPLITS:
        split_skips = SkipCounter()
        part = referit.load(raw_dir, split, skips=split_skips, checks=checks)
        query_path = layout.require(referit.query_file(split))
        part = _drop_tokenless(part, "tokens", split_skips, query_path, "region_id")
        _require_rows(part, query_path, f"the {split} split", "expressions", split_skips)
        skips.merge(split_skips)
        parts[split] = part
    _disjoint_splits(parts, layout)
    df = pd.concat(parts.values(), ignore_index=True)
    df["dataset"] = dataset
    # Without an image folder this is an annotation-only copy: image_path is <NA> throughout, by design.
    checks["image_files_checked"] = bool(layout.image_dirs)
    if layout.image_dirs:
        df["image_path"] = _usable_images(df, defects, {}, layout.image_dirs[0])
    df["image_path"] = _repo_relative(df["image_path"], repo_root)
    checks["mask_files_checked"] = bool(layout.mask_dirs)
    df["mask_rle"] = _referit_masks(layout, df, defects)
    truncated = _clip_tokens(df, "tokens", max_tokens)
    df = to_frame(df)
    vocab, vocab_source = referit_vocab(raw_dir, df.loc[df["split"] == "train", "tokens"], min_word_count, vocabulary)
    metrics = {f"{split}/tuples": int((df["split"] == split).sum()) for split in REFERIT_SPLITS}
    metrics["vocab/source"] = vocab_source
    metrics.update({f"{split}/images": int(df.loc[df["split"] == split, "image_id"].nunique())
                    for split in REFERIT_SPLITS})
    metrics["truncated_expressions"] = truncated
    metrics["tuples_with_mask"] = int(df["mask_rle"].notna().sum())
    metrics.update(_vocab_metrics(vocab, df, "tokens"))
    metrics.update(skips.input_metrics())
    metrics.update(skips.as_metrics())
    metrics.update(defects.as_metrics("kept_with_defect/"))
    metrics.update({f"checks/{name}": made for name, made in sorted(checks.items())})
    return df, vocab, metrics


_COCO_FILE = re.compile(r"^(instances|captions)_(train|val)(\d{4})\.json$")


def _coco_files(raw_dir: Path, kind: str) -> list[tuple[str, str, Path]]:
    """(split, image_folder, path) for each instances_/captions_ file under raw_dir."""
    found = []
    for path in sorted(raw_dir.rglob(f"{kind}_*.json")):
        m = _COCO_FILE.match(path.name)
        if m:
            found.append((m.group(2), f"{m.group(2)}{m.group(3)}", path))
    if not found:
        raise DataError(raw_dir, f"no COCO {kind}_<train|val><year>.json file found")
    first: dict[str, Path] = {}
    for split, _, path in found:  # a second copy (or 2014 beside 2017) would list every annotation twice
        if split in first:
            raise DataError(path, f"a second {kind} file for the {split} split (the first: {first[split]})")
        first[split] = path
    return found


def _coco_image_paths(raw_dir: Path, folder: str, part: pd.DataFrame, repo_root: Path,
                      defects: SkipCounter, checks: dict, cache: dict) -> pd.Series:
    """Repo-relative image path where the image exists and is usable; <NA> otherwise, counted
    as a defect when the layout has the image folder (annotation-only copies have none)."""
    base = raw_dir / folder
    checks[f"image_files_checked/{folder}"] = base.is_dir()
    if not base.is_dir():
        return pd.Series(pd.NA, index=part.index, dtype=object)
    present = {p.name for p in base.iterdir()}
    found = part.assign(image_path=part["file_name"].map(lambda f: str(base / f) if f in present else None))
    usable = _usable_images(found, defects, cache, base)
    return usable.map(lambda p: os.path.relpath(p, repo_root) if isinstance(p, str) else pd.NA)


def prepare_coco(raw_dir: Path, dataset: str, min_word_count: int, max_tokens: int,
                 repo_root: Path = Path(".")) -> tuple[pd.DataFrame, pd.DataFrame, Vocab, dict]:
    checks: dict[str, bool] = {}
    image_cache: dict = {}
    tables, accounts = {}, {}
    for unit, loader, id_column in (("captions", coco.load_captions, "caption_id"),
                                    ("instances", coco.load_instances, "region_id")):
        skips, defects = SkipCounter(), SkipCounter(kind=DEFECT)
        parts = []
        for split, folder, path in _coco_files(raw_dir, unit):
            file_skips = SkipCounter()
            part = loader(path, skips=file_skips)
            if unit == "captions":
                part = _drop_tokenless(part, "tokens", file_skips, path, id_column)
            _require_rows(part, path, f"the {split} split", unit, file_skips)
            skips.merge(file_skips)
            part["split"] = split
            part["image_path"] = _coco_image_paths(raw_dir, folder, part, repo_root, defects, checks, image_cache)
            parts.append(part)
        tables[unit] = pd.concat(parts, ignore_index=True)
        tables[unit]["dataset"] = dataset
        accounts[unit] = skips, defects
    caps, inst = tables["captions"], tables["instances"]
    truncated = _clip_tokens(caps, "tokens", max_tokens)
    vocab = Vocab.build(caps.loc[caps["split"] == "train", "tokens"], min_word_count)
    metrics = {}
    for split in sorted(caps["split"].unique()):
        metrics[f"{split}/captions"] = int((caps["split"] == split).sum())
        metrics[f"{split}/images"] = int(caps.loc[caps["split"] == split, "image_id"].nunique())
        metrics[f"{split}/instances"] = int((inst["split"] == split).sum())
    metrics["truncated_captions"] = truncated
    metrics.update(_vocab_metrics(vocab, caps, "tokens"))
    for unit, (skips, defects) in accounts.items():
        metrics.update(skips.input_metrics())
        metrics.update(skips.as_metrics(f"skipped/{unit}/"))
        metrics.update(defects.as_metrics(f"kept_with_defect/{unit}/"))
    metrics.update({f"checks/{name}": made for name, made in sorted(checks.items())})
    return caps, inst, vocab, metrics


# refer split_bys whose splits are by image (Yu et al.'s unc, Nagaraja et al.'s umd, ReferIt's berkeley);
# refcocog's google split is by object: its train and val share images, and the check is not made.
REFER_SPLITS_BY_IMAGE = ("unc", "umd", "berkeley")


def _images_in_several_splits(df: pd.DataFrame) -> pd.Series:
    """image_id -> the splits it is in (canonical order), for each image in more than one split."""
    order = {s: i for i, s in enumerate(refer.KNOWN_SPLITS)}
    splits = df.groupby("image_id", sort=True)["split"].agg(lambda s: sorted(set(s), key=order.get))
    return splits[splits.map(len) > 1]


def prepare_refer(raw_dir: Path, dataset: str, dataset_cfg: DatasetConfig, min_word_count: int, max_tokens: int,
                  repo_root: Path = Path(".")) -> tuple[pd.DataFrame, Vocab, dict]:
    """refer API layout (refs(<split_by>).p + instances.json under raw_dir[/<refer dataset>], images in
    raw_dir/<image_dir>) -> one row per (ref, sentence) with box and mask, the train split's vocabulary,
    and metrics (input/expressions = the <split>/tuples + every skipped/<reason>)."""
    skips, defects, checks = SkipCounter(), SkipCounter(kind=DEFECT), {}
    if dataset_cfg.format != "refer" or dataset_cfg.split_by is None:
        raise ConfigError(f"datasets.{dataset}: format {dataset_cfg.format!r} with split_by "
                          f"{dataset_cfg.split_by!r}; prepare_refer reads format 'refer' with a split_by")
    split_by = dataset_cfg.split_by
    name = dataset_cfg.refer_name(dataset)
    refs_path = refer.dataset_dir(raw_dir, name, split_by) / refer.refs_file(split_by)
    image_dir = raw_dir / dataset_cfg.image_dir
    # Without the image folder this is an annotation-only copy: image_path is <NA> throughout, by design.
    checks["image_files_checked"] = image_dir.is_dir()
    df = refer.load(raw_dir, name, split_by, skips=skips, defects=defects,
                    image_dir=image_dir if image_dir.is_dir() else None)
    _require_rows(df.loc[df["split"] == "train"], refs_path, "the train split (the vocabulary's)",
                  "expressions", skips)
    if image_dir.is_dir():  # refer.load counted the missing files; here the unreadable, truncated, mis-sized
        found = df["image_path"].notna()
        df.loc[found, "image_path"] = _usable_images(df.loc[found], defects, {}, image_dir)
    df["image_path"] = _repo_relative(df["image_path"], repo_root)
    shared = _images_in_several_splits(df)
    checks["split_images_disjoint"] = split_by in REFER_SPLITS_BY_IMAGE
    if split_by in REFER_SPLITS_BY_IMAGE and len(shared):
        image_id, splits = next(iter(shared.items()))
        raise DataError(refs_path, f"image {image_id} is in the {' and the '.join(splits)} split, but split_by "
                        f"{split_by!r} splits by image ({len(shared)} images are in more than one split)",
                        record=f"image {image_id}")
    df["dataset"] = dataset
    truncated = _clip_tokens(df, "tokens", max_tokens)
    df = to_frame(df)
    vocab = Vocab.build(df.loc[df["split"] == "train", "tokens"], min_word_count)
    metrics: dict = {}
    for split in (s for s in refer.KNOWN_SPLITS if (df["split"] == s).any()):
        part = df.loc[df["split"] == split]
        metrics[f"{split}/tuples"] = len(part)
        metrics[f"{split}/images"] = int(part["image_id"].nunique())
        metrics[f"{split}/refs"] = int(part["ref_id"].nunique())
    metrics["vocab/source"] = f"train split (words seen >= {min_word_count} times)"
    metrics["truncated_expressions"] = truncated
    metrics["tuples_with_mask"] = int(df["mask_rle"].notna().sum())
    # Reported for every split_by (google's train and val share images by design).
    metrics["images_in_several_splits"] = len(shared)
    metrics.update(_vocab_metrics(vocab, df, "tokens"))
    metrics.update(skips.input_metrics())
    metrics.update(skips.as_metrics())
    metrics.update(defects.as_metrics("kept_with_defect/"))
    metrics.update({f"checks/{check}": made for check, made in sorted(checks.items())})
    return df, vocab, metrics
