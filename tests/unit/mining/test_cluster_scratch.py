"""The local Dask cluster's scratch folder: its own per process, removed on exit, and
removed on a later run when its process died without cleaning up."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from refexp.config import DaskConfig
from refexp.mining import cluster
from refexp.mining.cluster import dask_client, new_scratch_dir, purge_stale_scratch


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_purge_removes_only_folders_of_dead_processes(tmp_path, caplog):
    root = tmp_path / "scratch"
    mine = new_scratch_dir(root)
    ticks = cluster._start_ticks(os.getpid()) or 0
    dead = root / f"{_dead_pid()}-123-abc"
    (dead / "dask-scratch-space" / "worker-x").mkdir(parents=True)
    unrelated = root / "not-ours"
    unrelated.mkdir()
    stale = [dead]
    if sys.platform.startswith("linux"):  # a reused pid: same number, later start time
        reused = root / f"{os.getpid()}-{ticks + 1}-abc"
        reused.mkdir()
        stale.append(reused)
    with caplog.at_level(logging.INFO, logger="refexp.mining.cluster"):
        removed = purge_stale_scratch(root)
    assert sorted(removed) == sorted(stale)
    assert all(not p.exists() for p in stale) and mine.is_dir() and unrelated.is_dir()
    assert caplog.text.count("removing stale Dask scratch folder") == len(stale)
    assert purge_stale_scratch(tmp_path / "absent") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_zombie_owner_counts_as_dead(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while cluster._process_state(proc.pid) not in ("Z", "X", None) and time.monotonic() < deadline:
        time.sleep(0.01)  # exited, not yet reaped
    ticks = cluster._start_ticks(proc.pid)
    try:
        assert ticks is None or not cluster.owner_alive(proc.pid, ticks)
    finally:
        proc.wait()


def test_local_cluster_writes_scratch_in_its_own_folder_and_removes_it(tmp_path):
    import dask

    root = tmp_path / "scratch"
    with dask_client(DaskConfig(local_workers=1), scratch_root=root) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        (scratch,) = root.iterdir()
        assert scratch.name.startswith(f"{os.getpid()}-")
        assert dask.config.get("temporary-directory") == str(scratch)
        assert any(scratch.rglob("worker-*"))
    assert list(root.iterdir()) == []
    assert dask.config.get("temporary-directory") != str(scratch)
