"""`make ui`: a local Prefect server on 127.0.0.1, and the pipeline served as a scheduled deployment.

    python -m flows.serve                 # server on 127.0.0.1:<flows.server_port>, UI at http://127.0.0.1:<port>
    python -m flows.serve --port 4300     # another port
    python -m flows.serve --no-server     # serve against an existing server (PREFECT_API_URL)

The deployment (`flows.deployment` in params.yaml) runs flows.pipeline on the cron
schedule `flows.cron` (`flows.timezone`); scheduled runs appear in the UI and any run
can be started there with its own targets/force. Before serving, the Prefect tag
concurrency limit `flows.gpu_tag` is set to `flows.gpu_concurrency` (created, or updated
when it exists), so the training stages' tasks, which carry that tag, run at most that
many at a time on this server (UI: Concurrency). Prefect keeps its database under
.prefect/ in the repo (PREFECT_HOME, see flows/__init__.py). Ctrl-C stops both the
deployment and the server.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flows.dag import REPO_ROOT, flows_config
from refexp.config import FlowsConfig

log = logging.getLogger("flows.serve")

HOST = "127.0.0.1"  # never 0.0.0.0: the UI has no authentication
STARTUP_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 30


class ServerError(RuntimeError):
    """The local Prefect server did not come up (or the port is taken)."""


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) == 0


def wait_healthy(api_url: str, proc: subprocess.Popen | None, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    """Poll <api>/health until it answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"prefect server exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ServerError(f"prefect server at {api_url} not healthy after {timeout:.0f} s")


def start_server(port: int) -> subprocess.Popen:
    if _port_in_use(port):
        raise ServerError(f"port {port} on {HOST} is already in use; pick another with --port or flows.server_port")
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    # Its own session: Ctrl-C in the terminal reaches only this process, so the served deployment
    # shuts down (pausing its schedule through the API) while the server is still up; the server
    # is stopped afterwards, by its PID, in `main`.
    proc = subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True)
    log.info("started the Prefect server (pid %d): %s", proc.pid, " ".join(cmd))
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server by its PID (and its process group, which it leads): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=STOP_TIMEOUT_SECONDS)
    log.info("Prefect server (pid %d) stopped", proc.pid)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def ensure_gpu_limit(cfg: FlowsConfig) -> int:
    """Set the tag concurrency limit `cfg.gpu_tag` to `cfg.gpu_concurrency` on the Prefect API (an upsert:
    a later `make ui` with other params updates it); returns the limit the server now holds."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=cfg.gpu_tag, concurrency_limit=cfg.gpu_concurrency)
        held = client.read_concurrency_limit_by_tag(cfg.gpu_tag).concurrency_limit
    log.info("task concurrency limit: tag '%s' -> %d run(s) at a time (stages %s)",
             cfg.gpu_tag, held, ", ".join(cfg.gpu_stages))
    return held


def serve(repo: Path) -> None:
    """Serve the pipeline flow as a deployment with the cron schedule from params (blocks)."""
    from prefect.schedules import Cron

    from flows.pipeline import pipeline

    cfg = flows_config(repo)
    pipeline.serve(
        name=cfg.deployment,
        schedule=Cron(cfg.cron, timezone=cfg.timezone),
        parameters={"repo": str(repo), "targets": None, "force": False},
        description="refexp: every dvc.yaml stage through `dvc repro --single-item`, retries from params.yaml",
        tags=["refexp", "dvc"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(REPO_ROOT), help="repository with dvc.yaml and params.yaml")
    parser.add_argument("--port", type=int, help="server port (default: params flows.server_port)")
    parser.add_argument("--no-server", action="store_true", help="use the server at PREFECT_API_URL instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API poll otherwise
    repo = Path(args.repo).resolve()
    cfg = flows_config(repo)

    server = None
    if not args.no_server:
        port = args.port or cfg.server_port
        api_url = f"http://{HOST}:{port}/api"
        # Set before Prefect is first imported (in `serve`), so the client and server agree.
        os.environ.update(
            PREFECT_API_URL=api_url,
            PREFECT_UI_API_URL=api_url,
            PREFECT_SERVER_API_HOST=HOST,
            PREFECT_SERVER_API_PORT=str(port),
        )
    elif not os.environ.get("PREFECT_API_URL"):
        parser.error("--no-server needs PREFECT_API_URL")
    # Ctrl-C and a plain `kill` both end in the `finally` that stops the server (SIGINT is
    # re-armed because a shell starting us in the background may have set it to "ignore").
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if not args.no_server:
            server = start_server(port)
            wait_healthy(api_url, server)
            print(f"Prefect UI: http://{HOST}:{port}  (deployment '{cfg.deployment}', cron '{cfg.cron}' {cfg.timezone})", flush=True)
        ensure_gpu_limit(cfg)
        serve(repo)
    except KeyboardInterrupt:
        log.info("interrupted; shutting down")
    except ServerError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
