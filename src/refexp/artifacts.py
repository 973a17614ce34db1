"""Atomic artifact writes: write to a temporary sibling, then rename.

A killed stage never leaves a half-written output that looks finished. Under torchrun (training.devices
> 1) only rank 0 writes: the other ranks run the same stage code, and their writes go to a private
temporary path that is removed, never renamed over the output (refexp.distributed).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pandas as pd

from refexp.distributed import rank, writes_outputs


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` on success (on rank 0 only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not writes_outputs():
        with _discarded(path.with_name(f".{path.name}.rank{rank()}.tmp")) as tmp:
            yield tmp
        return
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def _discarded(tmp: Path) -> Iterator[Path]:
    """A rank other than 0: the writer fills a private path, removed afterwards."""
    _remove(tmp)  # left by a killed run
    try:
        yield tmp
    finally:
        _remove(tmp)


def save_torch(obj: object, path: str | Path) -> None:
    """torch.save, atomically, through a Python file so that a full or read-only disk raises an
    OSError naming the file (torch's own writer raises a RuntimeError naming neither)."""
    import torch

    from refexp.errors import with_filename

    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
        except OSError as err:
            raise with_filename(err, path) from None


def write_json(path: str | Path, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _previous(path: Path) -> Path:
    return path.with_name(f".{path.name}.previous")


@contextlib.contextmanager
def keep_last_good(*paths: str | Path) -> Iterator[None]:
    """Outputs a stage rewrites in place (a report's figure folder, its markdown): the last good
    version is moved aside while the stage runs, restored if it fails, dropped once it succeeds.
    After a kill the aside copy survives and the next run restores it first, so a half-written
    output never replaces the last good one."""
    if not writes_outputs():  # rank 0 moves and restores them
        yield
        return
    moved: list[Path] = []
    for path in map(Path, paths):
        previous = _previous(path)
        if previous.exists():  # a killed earlier run: its aside copy is the last good state
            _remove(path)
        elif path.exists():
            os.replace(path, previous)
        if previous.exists():
            moved.append(path)
    try:
        yield
    except BaseException:
        for path in moved:
            _remove(path)
            os.replace(_previous(path), path)
        raise
    for path in moved:
        _remove(_previous(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
