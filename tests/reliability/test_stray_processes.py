"""kill -9 of a process holding a MeteorPool and a Dask client leaves no JVM running,
and the next run removes the Dask scratch folder it left (issue 11, item 3)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from refexp.config import DaskConfig
from refexp.mining.cluster import dask_client

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only"),
    pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java"),
    pytest.mark.timeout(90),
]

REPO_ROOT = Path(__file__).resolve().parents[2]

# The victim: a local Dask cluster, then METEOR on two JVMs; once both JVMs exist it reports
# their pids, mid-score (loading or scoring, not waiting on stdin, where EOF alone would end
# them), and is killed there.
CHILD = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    from refexp.config import DaskConfig
    from refexp.mining.cluster import dask_client
    from refexp.text.meteor import MeteorPool, meteor_pids

    ready, root = Path(sys.argv[1]), Path(sys.argv[2])

    def report(pool):
        while len(meteor_pids(pool)) < 2:
            time.sleep(0.02)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"jvms": meteor_pids(pool)}))
        tmp.rename(ready)

    with dask_client(DaskConfig(local_workers=1), scratch_root=root) as client, \\
            MeteorPool(n_jvms=2, batch_size=200) as pool:
        assert client.submit(sum, [1, 2]).result() == 3
        threading.Thread(target=report, args=(pool,), daemon=True).start()
        hyps = ["a man on the left", "red car", "the tall tree", "a dog"] * 1000
        pool.score(hyps, hyps[::-1])
        time.sleep(600)
""")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start ticks) from /proc, None once the pid is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _running(pid: int, ticks: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == ticks and st[0] not in ("Z", "X")  # zombies are dead


def test_kill_9_leaves_no_jvm_and_next_run_cleans_scratch(tmp_path, caplog):
    ready, root = tmp_path / "ready.json", tmp_path / "scratch"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])))
    # its own session, so a stray signal cannot reach pytest
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ready), str(root)], env=env, cwd=tmp_path,
                             start_new_session=True, stderr=subprocess.PIPE)
    jvms: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if child.poll() is not None:
                pytest.fail(f"child exited {child.returncode}: {child.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("child not ready after 60 s")
            time.sleep(0.1)
        pids = json.loads(ready.read_text())["jvms"]
        assert len(pids) == 2
        for pid in pids:
            state, ppid, ticks = _stat(pid)
            assert ppid == child.pid and state not in ("Z", "X")
            jvms[pid] = ticks
        scratch = [p for p in root.iterdir() if p.name.startswith(f"{child.pid}-")]
        assert len(scratch) == 1 and any(scratch[0].rglob("worker-*"))

        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        # PDEATHSIG kills at once; a JVM left to notice EOF would first finish loading METEOR
        t0 = time.monotonic()
        while any(_running(p, t) for p, t in jvms.items()) and time.monotonic() - t0 < 2:
            time.sleep(0.05)
        survivors = [p for p, t in jvms.items() if _running(p, t)]
        assert not survivors, f"JVMs {survivors} outlived their killed parent"
        assert scratch[0].exists()  # SIGKILL gave no chance to clean up

        with caplog.at_level(logging.INFO, logger="refexp.mining.cluster"), \
                dask_client(DaskConfig(local_workers=1), scratch_root=root):
            pass
        assert not scratch[0].exists()
        assert "removing stale Dask scratch folder" in caplog.text and str(scratch[0]) in caplog.text
        assert list(root.iterdir()) == []  # ours went on exit
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pid, ticks in jvms.items():  # never leave a stray behind, even on failure
            if _running(pid, ticks):
                os.kill(pid, signal.SIGKILL)
        child.stderr.close()
