"""Errors every layer raises and the one-line wording a stage prints for an operating-system error.

Light on purpose (no torch): stages/_cli.py imports it before any stage decides what it needs.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


def _free_mb(path: Path) -> str:
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return f"{shutil.disk_usage(candidate).free / 2**20:.0f} MB"
    return "unknown"


def describe_os_error(err: OSError) -> str:
    """One line naming the file and the cause of an OSError, and what to do about it."""
    name = err.filename if err.filename is not None else "(file not named by the system)"
    cause = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        free = _free_mb(Path(err.filename)) if err.filename is not None else "unknown"
        return (f"{name}: no space left on device ({free} free there); free some space or point "
                "params.yaml `paths` at a larger disk, then re-run (training resumes from its checkpoint)")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{name}: cannot write ({cause}); make it writable or point params.yaml `paths` "
                "elsewhere (the last good outputs are kept)")
    if err.errno == errno.ENOENT:
        return f"{name}: not found ({cause})"
    return f"{name}: {cause}"


def with_filename(err: OSError, path: str | Path) -> OSError:
    """The same error naming `path`, for writers (torch.save to a file object) whose errors name none."""
    if err.filename is not None:
        return err
    return type(err)(err.errno, err.strerror or str(err), str(path))
