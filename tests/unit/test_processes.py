"""refexp.processes: children and pool workers end with their parent."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from refexp import processes
from tests.conftest import REPO_ROOT

_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def _from_short_lived_thread(start):
    out = []
    t = threading.Thread(target=lambda: out.append(start(["sleep", "30"])))
    t.start()
    t.join()
    return out[0]


@_linux
def test_pdeathsig_fires_when_the_forking_thread_exits():
    # why children are not forked by short-lived threads (METEOR's executor threads)
    proc = _from_short_lived_thread(processes._popen_tied)
    assert proc.wait(5) == -signal.SIGKILL


@_linux
def test_spawn_outlives_the_thread_that_asked():
    proc = _from_short_lived_thread(processes.spawn_tied)
    try:
        time.sleep(0.3)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


@_linux
def test_child_exits_if_parent_died_before_prctl():
    preexec = processes._pdeathsig_preexec()
    for orphaned, code in ((False, 5), (True, 0)):
        pid = os.fork()
        if pid == 0:  # child: only calls preexec, then leaves
            try:
                if orphaned:
                    os.getppid = lambda: 1
                preexec()
                os._exit(5)
            finally:
                os._exit(7)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == code


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_initializer_ties_to_the_given_parent():
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=processes.die_with_parent, initargs=(os.getpid(),)) as pool:
        assert pool.submit(os.getppid).result() == os.getpid()


@_linux
def test_pool_workers_die_with_a_killed_parent(tmp_path):
    pids_file = tmp_path / "workers"
    child = textwrap.dedent(f"""
        import multiprocessing, os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from refexp.processes import die_with_parent
        if __name__ == "__main__":
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                busy = [pool.submit(time.sleep, 600) for _ in range(2)]
                while len(pool._processes) < 2:
                    time.sleep(0.05)
                open({str(pids_file)!r} + ".tmp", "w").write(" ".join(map(str, pool._processes)))
                os.rename({str(pids_file)!r} + ".tmp", {str(pids_file)!r})
                time.sleep(600)
    """)
    script = tmp_path / "victim.py"
    script.write_text(child)
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}:{REPO_ROOT / 'src'}")
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not pids_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the pool never started"
            time.sleep(0.05)
        workers = [int(p) for p in pids_file.read_text().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        time.sleep(1.0)  # the workers are inside their 600 s task, not idle on the queue
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: the workers must follow by themselves
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in workers)
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
