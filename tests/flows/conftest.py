"""A tiny DVC repository for the flow tests: three shell stages (one a foreach) and one
stage that fails on its first run only (a marker file outside its outputs); and one Prefect
test server (prefect_test_harness) shared by the tests that run flows."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DVC_YAML = """\
stages:
  make_a:
    cmd: python -c "open('a.txt', 'w').write('a')"
    outs: [a.txt]
  flaky_b:
    cmd: python flaky.py
    deps: [a.txt, flaky.py]
    outs: [b.txt]
  make_c:
    foreach: [x, y]
    do:
      cmd: python -c "open('c_${item}.txt', 'w').write(open('b.txt').read() + '${item}')"
      deps: [b.txt]
      outs:
        - c_${item}.txt
"""

# Fails once: the first run leaves a marker and exits 3; the retry succeeds.
FLAKY = """\
import pathlib, sys
marker = pathlib.Path("failed_once.marker")
if not marker.exists():
    marker.write_text("1")
    print("flaky_b: simulated transient failure", flush=True)
    sys.exit(3)
pathlib.Path("b.txt").write_text(pathlib.Path("a.txt").read_text() + "b")
"""

PARAMS = """\
flows:
  deployment: tiny-pipeline
  cron: "17 4 * * *"
  default: {retries: 0, delay_seconds: 0.0}
  stages:
    flaky_*: {retries: 2, delay_seconds: 0.2, backoff: 2.0}
"""


@pytest.fixture(scope="package")
def harness():
    """A temporary Prefect API for the tests/flows package, stopped after its last test (its start-up
    takes 10-60 s on 2 shared cores)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, check=check, timeout=120
    )


def new_dvc_repo(repo: Path, files: dict[str, str]) -> Path:
    """A git + DVC repository at `repo` holding `files` (name -> text, dedented)."""
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, timeout=30)
    dvc(repo, "init", "-q")
    for name, text in files.items():
        (repo / name).write_text(textwrap.dedent(text))
    return repo


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    return new_dvc_repo(tmp_path / "tiny", {"dvc.yaml": DVC_YAML, "flaky.py": FLAKY, "params.yaml": PARAMS,
                                            ".gitignore": "failed_once.marker\n"})
