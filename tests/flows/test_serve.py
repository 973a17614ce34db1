"""`make ui` for real: `python -m flows.serve` starts `prefect server start` on 127.0.0.1, sets the
GPU tag's concurrency limit, and serves the pipeline as a deployment with the cron schedule from params.yaml."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.flows.conftest import PARAMS, dvc

WAIT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The codes Prefect's own client retries (prefect.client.base): the server answers 503 while its SQLite
# database is busy, which happens on 2 loaded cores; any other non-2xx fails the test with its body.
RETRY_CODES = {408, 429, 502, 503}
API_RETRIES = 20


def call_api(client: httpx.Client, method: str, path: str, **kwargs):
    """One API call's JSON, retried as Prefect's client retries it; fails on any other error status."""
    for attempt in range(API_RETRIES):
        response = client.request(method, path, **kwargs)
        if response.status_code not in RETRY_CODES:
            break
        time.sleep(min(0.5 * 2**attempt, 5.0))
    assert response.is_success, f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}"
    return response.json()


def wait_for(what: str, probe, log_path, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(1)
    tail = log_path.read_text()[-3000:] if log_path.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; serve log tail:\n{tail}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def server_pid(log_path) -> int | None:
    match = re.search(r"started the Prefect server \(pid (\d+)\)", log_path.read_text())
    return int(match.group(1)) if match else None


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to flows.serve (it stops its server by PID), then SIGKILL whatever is left of the group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 30
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=30)


@pytest.mark.slow  # a real Prefect server: ~1-3 min on 2 shared cores
def test_served_deployment_is_listed_scheduled_and_runs(tiny_repo, tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(REPO_ROOT), PREFECT_RUNNER_POLL_FREQUENCY="2")
    log_path = tmp_path / "serve.log"
    # The GPU limit `make ui` creates comes from params (default 1).
    (tiny_repo / "params.yaml").write_text(PARAMS + "  gpu_concurrency: 2\n")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.serve", "--repo", str(tiny_repo), "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        with httpx.Client(base_url=api, timeout=10) as client:
            assert wait_for("the server", lambda: client.get("/health").status_code == 200, log_path)

            def deployment():
                rows = call_api(client, "POST", "/deployments/filter", json={})
                return next((d for d in rows if d["name"] == "tiny-pipeline"), None)

            found = wait_for("the deployment", deployment, log_path)
            # Created before the deployment is served: the tag limit that serialises the training stages.
            gpu_limit = call_api(client, "GET", "/concurrency_limits/tag/gpu")
            assert gpu_limit["concurrency_limit"] == 2, gpu_limit
            assert found["parameters"]["repo"] == str(tiny_repo)
            assert [s["schedule"]["cron"] for s in found["schedules"]] == ["17 4 * * *"]
            # The server's scheduler puts the next cron runs on the calendar (what the UI shows).
            scheduled = wait_for(
                "scheduled runs",
                lambda: [r for r in call_api(client, "POST", "/flow_runs/filter", json={}) if r["state_name"] == "Scheduled"],
                log_path,
            )
            assert all(r["deployment_id"] == found["id"] for r in scheduled)

            # A run started from the API (as from the UI's "Run" button) executes the DVC stages.
            run = call_api(client, "POST", f"/deployments/{found['id']}/create_flow_run", json={})
            final = wait_for(
                "the flow run to finish",
                lambda: (lambda s: s if s in ("COMPLETED", "FAILED", "CRASHED") else None)(
                    call_api(client, "GET", f"/flow_runs/{run['id']}")["state_type"]
                ),
                log_path,
                timeout=240,
            )
            assert final == "COMPLETED", log_path.read_text()[-3000:]
        assert (tiny_repo / "c_y.txt").read_text() == "aby"
        assert json.loads(dvc(tiny_repo, "status", "--json").stdout) == {}
    finally:
        stop_group(proc)
        # The server runs in its own session (so Ctrl-C reaches only flows.serve): if flows.serve
        # did not stop it, do it here by its PID, so the test never leaves it running.
        pid = server_pid(log_path)
        leftover = pid is not None and group_alive(pid)
        if leftover:
            os.killpg(pid, signal.SIGKILL)
    assert pid is not None, log_path.read_text()[-3000:]
    assert not group_alive(proc.pid), "flows.serve left processes behind"
    assert not leftover, f"flows.serve did not stop the Prefect server (pid {pid})"
    assert f"Prefect server (pid {pid}) stopped" in log_path.read_text()
