"""Raw layouts -> common-schema tables (parquet) and train-only vocabularies.

prepare_referit: data/raw/<name> (ReferIt layout) -> tuples.parquet + vocab.txt
prepare_coco:    data/raw/<name> (COCO 2014 layout) -> captions.parquet + instances.parquet + vocab.txt
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from refexp.data import coco, referit
from refexp.data.coco import encode_mask
from refexp.data.schema import to_frame
from refexp.data.skips import DataError, SkipCounter
from refexp.text.vocab import SPECIALS, Vocab

log = logging.getLogger(__name__)

REFERIT_SPLITS = ("train", "val", "test")


def _repo_relative(paths: pd.Series, repo_root: Path) -> pd.Series:
    root = os.path.abspath(repo_root)
    return paths.map(lambda p: os.path.relpath(os.path.abspath(p), root) if isinstance(p, str) else pd.NA)


def _clip_tokens(df: pd.DataFrame, column: str, max_tokens: int) -> int:
    """Truncate token lists to max_tokens; return how many were truncated (kept, not dropped)."""
    too_long = df[column].map(len) > max_tokens
    df.loc[too_long, column] = df.loc[too_long, column].map(lambda t: list(t[:max_tokens]))
    return int(too_long.sum())


def _drop_tokenless(df: pd.DataFrame, column: str, skips: SkipCounter, file: str, id_column: str) -> pd.DataFrame:
    empty = df[column].map(len) == 0
    for record in df.loc[empty, id_column]:
        skips.add("no_tokens", file, str(record))
    return df.loc[~empty].reset_index(drop=True)


def _vocab_metrics(vocab: Vocab, df: pd.DataFrame, column: str) -> dict:
    metrics = {"vocab/size": len(vocab)}
    for split, part in df.groupby("split"):
        tokens = [t for ts in part[column] for t in ts]
        unknown = sum(1 for i in vocab.encode(tokens) if i == vocab.unk_id)
        metrics[f"{split}/unk_rate"] = round(unknown / max(len(tokens), 1), 6)
    return metrics


def _referit_masks(raw_dir: Path, df: pd.DataFrame, skips: SkipCounter) -> pd.Series:
    """mask_rle per row from mask/<region>.mat where the layout has masks (annotation-only copies have none)."""
    layout = referit.ReferItLayout.discover(raw_dir)
    if not layout.mask_dirs:
        return pd.Series(pd.NA, index=df.index, dtype="string")
    regions = df.drop_duplicates("region_id")
    rles: dict[str, str] = {}
    for row in regions.itertuples():
        try:
            path = layout.mask_path(row.region_id)
        except DataError:
            skips.add("mask_missing", raw_dir, row.region_id, n=int((df["region_id"] == row.region_id).sum()))
            continue
        mask = referit.read_mask(path, (int(row.image_width), int(row.image_height)))
        rles[row.region_id] = encode_mask(mask)
    return df["region_id"].map(rles).astype("string")


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
    skips = SkipCounter()
    parts = [referit.load(raw_dir, split, skips=skips) for split in REFERIT_SPLITS]
    df = pd.concat(parts, ignore_index=True)
    df["dataset"] = dataset
    df["image_path"] = _repo_relative(df["image_path"], repo_root)
    df = _drop_tokenless(df, "tokens", skips, str(raw_dir), "region_id")
    df["mask_rle"] = _referit_masks(raw_dir, df, skips)
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
    metrics.update(skips.as_metrics())
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
    return found


def _image_paths(raw_dir: Path, folder: str, file_names: pd.Series, repo_root: Path) -> pd.Series:
    """Repo-relative image path where the image exists (annotation-only copies have none)."""
    base = raw_dir / folder
    present = {p.name for p in base.iterdir()} if base.is_dir() else set()
    return file_names.map(lambda f: os.path.relpath(base / f, repo_root) if f in present else pd.NA)


def prepare_coco(raw_dir: Path, dataset: str, min_word_count: int, max_tokens: int,
                 repo_root: Path = Path(".")) -> tuple[pd.DataFrame, pd.DataFrame, Vocab, dict]:
    skips = SkipCounter()
    captions, instances = [], []
    for split, folder, path in _coco_files(raw_dir, "captions"):
        part = coco.load_captions(path, skips=skips)
        part["split"] = split
        part["image_path"] = _image_paths(raw_dir, folder, part["file_name"], repo_root)
        captions.append(part)
    for split, folder, path in _coco_files(raw_dir, "instances"):
        part = coco.load_instances(path, skips=skips)
        part["split"] = split
        part["image_path"] = _image_paths(raw_dir, folder, part["file_name"], repo_root)
        instances.append(part)
    caps = pd.concat(captions, ignore_index=True)
    caps["dataset"] = dataset
    caps = _drop_tokenless(caps, "tokens", skips, str(raw_dir), "caption_id")
    truncated = _clip_tokens(caps, "tokens", max_tokens)
    inst = pd.concat(instances, ignore_index=True)
    inst["dataset"] = dataset
    vocab = Vocab.build(caps.loc[caps["split"] == "train", "tokens"], min_word_count)
    metrics = {}
    for split in sorted(caps["split"].unique()):
        metrics[f"{split}/captions"] = int((caps["split"] == split).sum())
        metrics[f"{split}/images"] = int(caps.loc[caps["split"] == split, "image_id"].nunique())
        metrics[f"{split}/instances"] = int((inst["split"] == split).sum())
    metrics["truncated_captions"] = truncated
    metrics.update(_vocab_metrics(vocab, caps, "tokens"))
    metrics.update(skips.as_metrics())
    return caps, inst, vocab, metrics
