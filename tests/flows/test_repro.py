"""`make run`'s runner (flows.repro / flows.dag.run_stages): the stages `dvc repro` would run, side by side
where the DAG allows, with dvc.lock as the record. A tiny DVC repository whose two middle stages can meet
at a barrier only if they really run at the same time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.dag import StageFailed, StagePlan, run_stages, stage_plan, stages_to_run
from tests.conftest import REPO_ROOT
from tests.flows.conftest import dvc, new_dvc_repo

DVC_YAML = """\
stages:
  root:
    cmd: python -c "open('root.txt', 'w').write('r')"
    deps: [source.txt]
    outs: [root.txt]
  middle:
    foreach: [p, q]
    do:
      cmd: python middle.py ${item}
      deps: [root.txt, middle.py]
      outs: ["middle_${item}.txt"]
  join:
    cmd: python -c "open('join.txt', 'w').write(open('middle_p.txt').read() + open('middle_q.txt').read())"
    deps: [middle_p.txt, middle_q.txt]
    outs: [join.txt]
"""

# Records when it ran (outside its outputs); with MEET=1 it waits until its sibling has started too,
# which only happens when both run at once (else it fails after 60 s).
MIDDLE = """\
import json, os, pathlib, sys, time
item, other = sys.argv[1], {"p": "q", "q": "p"}[sys.argv[1]]
log = pathlib.Path("log"); log.mkdir(exist_ok=True)
start = time.time()
(log / f"started_{item}").write_text("1")
if os.environ.get("MEET") == "1":
    deadline = time.time() + 60
    while not (log / f"started_{other}").exists():
        if time.time() > deadline:
            sys.exit(f"middle {item}: {other} never started beside me")
        time.sleep(0.05)
time.sleep(0.3)
(log / f"interval_{item}.json").write_text(json.dumps([start, time.time()]))
pathlib.Path(f"middle_{item}.txt").write_text(item)
"""


@pytest.fixture
def repo(tmp_path) -> Path:
    return new_dvc_repo(tmp_path / "repo", {"dvc.yaml": DVC_YAML, "middle.py": MIDDLE, "source.txt": "s",
                                            ".gitignore": "log/\n"})


def intervals(repo: Path) -> dict[str, list[float]]:
    return {item: json.loads((repo / "log" / f"interval_{item}.json").read_text()) for item in ("p", "q")}


def test_plan_has_dvc_edges(repo):
    plan = stage_plan(repo)
    assert plan.order == ["root", "middle@p", "middle@q", "join"]
    assert plan.upstream == {"root": frozenset(), "middle@p": frozenset({"root"}), "middle@q": frozenset({"root"}),
                             "join": frozenset({"middle@p", "middle@q"})}
    assert plan.downstream_closure(["middle@q"]) == {"middle@q", "join"}
    assert stage_plan(repo, ["middle@p"]).order == ["root", "middle@p"]


def test_launch_order_starts_the_longest_chain_first():
    # a -> b -> c is a chain of 3; d stands alone. Plan order (by name) would start d before b.
    plan = StagePlan(order=["a", "d", "b", "c"],
                     upstream={"a": frozenset(), "d": frozenset(), "b": frozenset({"a"}), "c": frozenset({"b"})})
    assert plan.launch_order() == ["a", "b", "d", "c"]


@pytest.mark.slow  # ~10 `dvc` processes: 20-40 s on 2 shared cores
def test_unordered_stages_run_at_once_and_dvc_lock_is_the_record(repo, monkeypatch):
    monkeypatch.setenv("MEET", "1")  # each middle stage fails unless its sibling runs beside it
    plan = stage_plan(repo)
    lines: list[tuple[str, str]] = []
    runs = run_stages(repo, plan, stages_to_run(repo, plan), jobs=2, on_line=lambda s, l: lines.append((s, l)))

    assert sorted(r.stage for r in runs) == sorted(plan.order) and all(r.returncode == 0 for r in runs)
    assert (repo / "join.txt").read_text() == "pq"
    p, q = intervals(repo).values()
    assert max(p[0], q[0]) < min(p[1], q[1])  # they overlapped
    assert any(stage == "middle@q" and "Running stage 'middle@q'" in line for stage, line in lines)
    # The record is DVC's: status is clean and a plain `dvc repro` has nothing to do.
    assert json.loads(dvc(repo, "status", "--json").stdout) == {}
    assert "Running stage" not in dvc(repo, "repro").stdout
    assert stages_to_run(repo, plan) == []

    # A changed input brings back exactly what `dvc repro` would run: that stage and its dependents.
    (repo / "middle.py").write_text((repo / "middle.py").read_text() + "\n")
    assert stages_to_run(repo, plan) == ["middle@p", "middle@q", "join"]
    assert stages_to_run(repo, plan, force=True) == plan.order


@pytest.mark.slow
def test_one_job_or_a_limit_of_one_keeps_stages_apart(repo):
    plan = stage_plan(repo)
    run_stages(repo, plan, plan.order, jobs=1, on_line=lambda s, l: None)
    p, q = intervals(repo).values()
    assert p[1] <= q[0]  # middle@p (first by name) ended before middle@q started

    # Two jobs, but the middle stages are "GPU" stages limited to one at a time.
    run_stages(repo, plan, ["middle@p", "middle@q"], jobs=2, force=True, on_line=lambda s, l: None,
               limited=lambda stage: stage.startswith("middle"), limit=1)
    p, q = intervals(repo).values()
    assert p[1] <= q[0]


@pytest.mark.slow
def test_a_failure_stops_what_depends_on_it_and_names_the_stage(repo):
    (repo / "middle.py").write_text("import sys\nif sys.argv[1] == 'q':\n    sys.exit('middle q: broken on purpose')\n"
                                    "open(f'middle_{sys.argv[1]}.txt', 'w').write(sys.argv[1])\n")
    plan = stage_plan(repo)
    with pytest.raises(StageFailed, match=r"(?s)stage middle@q failed \(dvc exit code \d+\).*broken on purpose"):
        run_stages(repo, plan, plan.order, jobs=2, on_line=lambda s, l: None)
    assert (repo / "middle_p.txt").read_text() == "p"  # the independent sibling finished and is recorded
    assert not (repo / "join.txt").exists()
    assert set(json.loads(dvc(repo, "status", "--json").stdout)) == {"middle@q", "join"}


@pytest.mark.slow
def test_cli_runs_what_needs_running_and_reports_times(repo):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "flows.repro", "--repo", str(repo), "--jobs", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("4 of 4 stage(s) to run, 2 at a time")
    assert "[join] Running stage 'join'" in first.stdout and "4 stage(s) in" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and again.stdout.startswith("0 of 4 stage(s) to run")


@pytest.mark.slow  # a Prefect test server plus ~10 `dvc` processes
def test_prefect_flow_runs_the_same_plan_side_by_side(harness, repo, monkeypatch):
    from flows.pipeline import pipeline

    monkeypatch.setenv("MEET", "1")  # the middle stages meet only if the flow runs them at once
    (repo / "params.yaml").write_text("flows: {jobs: 2}\n")
    results = pipeline(repo=str(repo))

    assert [r["stage"] for r in results] == ["root", "middle@p", "middle@q", "join"]
    p, q = intervals(repo).values()
    assert max(p[0], q[0]) < min(p[1], q[1])
    assert json.loads(dvc(repo, "status", "--json").stdout) == {}
    assert pipeline(repo=str(repo)) == []  # nothing changed: nothing to run


SLEEPER = """\
import os, pathlib, time
pathlib.Path("stage.pid").write_text(str(os.getpid()))
time.sleep(300)
pathlib.Path("slept.txt").write_text("done")
"""


@pytest.mark.slow
def test_a_runner_killed_outright_leaves_no_stage_running(tmp_path):
    import signal
    import time

    import psutil

    repo = new_dvc_repo(tmp_path / "sleepy", {"dvc.yaml": "stages:\n  sleep:\n    cmd: python sleeper.py\n"
                                                           "    deps: [sleeper.py]\n    outs: [slept.txt]\n",
                                              "sleeper.py": SLEEPER, ".gitignore": "stage.pid\n"})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    runner = subprocess.Popen([sys.executable, "-m", "flows.repro", "--repo", str(repo)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = repo / "stage.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and runner.poll() is None, "the stage never started"
        time.sleep(0.2)
    stage = psutil.Process(int(pid_file.read_text()))
    assert stage.is_running()
    runner.send_signal(signal.SIGKILL)  # no handler, no cleanup in the runner itself
    runner.wait(timeout=30)
    gone, alive = psutil.wait_procs([stage], timeout=30)
    assert stage in gone and not alive, "the stage outlived its runner"
    assert not (repo / "slept.txt").exists()


def test_startable_keeps_to_upstream_jobs_and_the_limit():
    plan = StagePlan(order=["a", "b", "c", "d"],
                     upstream={"a": frozenset(), "b": frozenset(), "c": frozenset({"a"}), "d": frozenset()})
    assert plan.startable(["a", "b", "c", "d"], set(), [], jobs=2) == ["a", "b"]
    assert plan.startable(["c", "d"], set(), ["a"], jobs=2) == ["d"]  # c waits for a
    assert plan.startable(["c", "d"], {"a"}, [], jobs=3) == ["c", "d"]
    gpu = lambda stage: stage in {"b", "c"}  # noqa: E731
    assert plan.startable(["b", "c", "d"], {"a"}, [], jobs=3, limited=gpu, limit=1) == ["b", "d"]
    assert plan.startable(["c", "d"], {"a"}, ["b"], jobs=3, limited=gpu, limit=1) == ["d"]
