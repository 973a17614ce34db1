"""The Dask client the mining join runs on: a real scheduler when params name one,
else an in-process LocalCluster (threads; the numba join releases the GIL).

Even in-process, Dask workers make scratch folders (`dask-scratch-space/worker-*`, with
spill storage, under `temporary-directory`, default the system temp dir). A SIGKILLed run
leaves them behind, so each local cluster gets its own folder
`<tmp>/refexp-dask/<pid>-<start ticks>-*`, removed on exit, and every `dask_client` first
deletes the folders whose owning process is gone. The workers are threads, so they end
with the process.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from refexp.config import DaskConfig

log = logging.getLogger(__name__)

_SCRATCH_NAME = re.compile(r"^(\d+)-(\d+)-")


def default_scratch_root() -> Path:
    return Path(tempfile.gettempdir()) / "refexp-dask"


def _start_ticks(pid: int) -> int | None:
    """Start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)", which may contain spaces
    return int(fields[19])


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def owner_alive(pid: int, ticks: int) -> bool:
    """Is the process that made a scratch folder still running (not a reused pid, not a zombie)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_ticks(pid)
    if now is None:  # no /proc: trust the pid
        return True
    return now == ticks and _process_state(pid) not in ("Z", "X")


def purge_stale_scratch(root: Path) -> list[Path]:
    """Delete scratch folders under `root` whose owning process is dead; returns them."""
    removed = []
    if not root.is_dir():
        return removed
    for path in sorted(root.iterdir()):
        m = _SCRATCH_NAME.match(path.name)
        if not m or not path.is_dir() or owner_alive(int(m[1]), int(m[2])):
            continue
        log.info("removing stale Dask scratch folder %s (its process %s is gone)", path, m[1])
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def new_scratch_dir(root: Path) -> Path:
    """A scratch folder named for this process (pid and start time), unique per call."""
    root.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{pid}-{_start_ticks(pid) or 0}-", dir=root))


@contextlib.contextmanager
def dask_client(cfg: DaskConfig, scratch_root: Path | None = None) -> Iterator[object]:
    import dask
    from distributed import Client, LocalCluster

    root = scratch_root or default_scratch_root()
    purge_stale_scratch(root)
    if cfg.scheduler_address:
        log.info("mining join on the Dask scheduler at %s", cfg.scheduler_address)
        with Client(cfg.scheduler_address) as client:
            yield client
        return
    scratch = new_scratch_dir(root)
    try:
        # temporary-directory too: anything else Dask writes locally lands in the same folder
        with dask.config.set({"temporary-directory": str(scratch)}), \
                LocalCluster(n_workers=cfg.local_workers, threads_per_worker=1, processes=False,
                             dashboard_address=None, local_directory=str(scratch)) as cluster, \
                Client(cluster) as client:
            yield client
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
