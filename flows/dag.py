"""The DVC side of the flow, without Prefect: which stages, in which order, and running them.

The stage list, its order and each stage's upstream stages come from DVC's own graph of
dvc.yaml (foreach items expanded, e.g. `fetch_data@referit`), so there is no second DAG.
A stage runs as `dvc --wait-for-lock repro --single-item <stage>`, so dvc.lock stays the
record and a plain `dvc repro` afterwards has nothing to do.

Several stages may run at once (`run_stages`): DVC holds its repository lock only while it
loads the DAG and commits a stage, not while the stage's command runs (dvc/stage/run.py,
`unlocked_repo`), and `--wait-for-lock` queues the other process for those moments. A stage
starts once every stage it depends on has finished; two stages the DAG leaves unordered never
read or write the same path (DVC makes an edge of every dependency on another stage's output),
so running them together is what DVC's own read/write locks allow.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import yaml

from refexp.config import ConfigError, FlowsConfig

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Lines of a failed stage's output repeated in the error (the full output is in the task log).
ERROR_TAIL_LINES = 30


class StageFailed(RuntimeError):
    """`dvc repro --single-item` exited non-zero; the message ends with its last output lines."""


def flows_config(repo: str | Path) -> FlowsConfig:
    """The `flows` section of <repo>/params.yaml (defaults when absent)."""
    path = Path(repo) / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raw = {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return FlowsConfig.model_validate(raw.get("flows") or {})
    except ValueError as err:
        raise ConfigError(f"{path}: invalid 'flows' section: {err}") from None


@dataclass(frozen=True)
class StagePlan:
    """The stages to consider, dependencies first, and each one's direct upstream stages among them."""

    order: list[str]
    upstream: dict[str, frozenset[str]]

    def dependents(self) -> dict[str, set[str]]:
        """Each stage's direct downstream stages."""
        out: dict[str, set[str]] = {s: set() for s in self.order}
        for stage, ups in self.upstream.items():
            for up in ups:
                out[up].add(stage)
        return out

    def downstream_closure(self, stages: Iterable[str]) -> set[str]:
        """The stages and every stage that depends on them, directly or not."""
        dependents = self.dependents()
        found, todo = set(), list(stages)
        while todo:
            stage = todo.pop()
            if stage not in found:
                found.add(stage)
                todo.extend(dependents[stage])
        return found

    def launch_order(self) -> list[str]:
        """The order in which ready stages start: the longest chain of stages still to come first (the head of
        a long chain holds back everything after it, so it should not wait for the end), ties in plan order."""
        dependents, depth = self.dependents(), {}
        for stage in reversed(self.order):
            depth[stage] = 1 + max((depth[d] for d in dependents[stage]), default=0)
        return sorted(self.order, key=lambda stage: -depth[stage])  # stable: ties keep plan order

    def startable(self, pending: list[str], done: set[str], running: Iterable[str], jobs: int,
                  limited: Callable[[str], bool] = lambda stage: False, limit: int | None = None) -> list[str]:
        """The pending stages (in their order) to start now: every upstream stage done, at most `jobs` running
        in all, and at most `limit` of the `limited` ones (the GPU stages on a CUDA machine)."""
        running = list(running)
        slots, gpu = jobs - len(running), sum(map(limited, running))
        chosen = []
        for stage in pending:
            if len(chosen) >= slots:
                break
            if not self.upstream[stage] <= done:
                continue
            if limit is not None and limited(stage):
                if gpu >= limit:
                    continue
                gpu += 1
            chosen.append(stage)
        return chosen


def stage_plan(repo: str | Path, targets: Iterable[str] | None = None) -> StagePlan:
    """dvc.yaml stages (with foreach items) in topological order, dependencies first, with their edges.

    With targets (stage names, `stage@item`, or a foreach group name), only those
    stages and everything they depend on, as `dvc repro <targets>` would run.
    Ties are broken by name so the order is stable.
    """
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edge stage -> a stage it depends on
        if targets:
            chosen = set()
            for target in targets:
                # DVC resolves a bare stage name against ./dvc.yaml: anchor it at the repo instead.
                dvcfile, _, name = target.rpartition(":")
                anchored = f"{os.path.join(dvc_repo.root_dir, dvcfile or 'dvc.yaml')}:{name}"
                try:
                    stages = dvc_repo.stage.collect(anchored)
                except DvcException as err:
                    raise ValueError(f"target '{target}': {err}") from None
                if not stages:
                    raise ValueError(f"no dvc.yaml stage matches target '{target}'")
                for stage in stages:
                    chosen.add(stage)
                    chosen |= nx.descendants(graph, stage)
            graph = graph.subgraph(chosen)
        names = {stage: _address(stage, dvc_repo.root_dir) for stage in graph.nodes}
        # Dependencies first: sort the reversed graph (edge dependency -> dependent).
        order = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=names.get)
        upstream = {names[stage]: frozenset(names[dep] for dep in graph.successors(stage)) for stage in graph.nodes}
        return StagePlan(order=[names[stage] for stage in order], upstream=upstream)


def stage_order(repo: str | Path, targets: Iterable[str] | None = None) -> list[str]:
    """dvc.yaml stages (with foreach items) in topological order, dependencies first (see stage_plan)."""
    return stage_plan(repo, targets).order


def _address(stage, root_dir: str) -> str:
    """The stage's DVC address relative to the repo root (`name`, or `sub/dvc.yaml:name`).

    DVC's own `addressing` is relative to the current directory, which the flow does not change.
    """
    dvcfile = os.path.relpath(stage.path, root_dir)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def dvc_env(repo: Path) -> dict[str, str]:
    """The environment a stage runs in: this venv's tools first, the repo importable."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(repo), env.get("PYTHONPATH", "")] if p)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


# The reaper: a small process of its own session that reads "+<pgid>" / "-<pgid>" lines, and when its stdin
# closes (the runner exited, or died, even by SIGKILL: the kernel closes its pipe) ends every group still
# registered, SIGTERM then SIGKILL. Each stage's dvc leads a process group holding the stage's own process.
_REAPER = """
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pgid in sorted(groups):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            groups.discard(pgid)
    if not groups:
        break
    time.sleep(5)
"""


class GroupReaper:
    """Ends the registered process groups when this process ends, however it ends: no stage keeps running
    after the runner that started it is gone (a `kill -9` of `make run` included)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _REAPER], stdin=subprocess.PIPE, text=True,
                                      start_new_session=True)
        self._lock = threading.Lock()

    def _send(self, line: str) -> None:
        with self._lock:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()

    def register(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def unregister(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        """Nothing left to end: the reaper exits at once (it ends what is still registered)."""
        with self._lock:
            self._proc.stdin.close()
        self._proc.wait()


def _dvc_repro_cmd(stage: str, force: bool) -> list[str]:
    # --wait-for-lock: another stage running beside this one may hold the repository lock for a moment.
    return [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage] + (["--force"] if force else [])


def run_dvc_stage(
    repo: str | Path,
    stage: str,
    force: bool = False,
    on_line: Callable[[str], None] = log.info,
) -> None:
    """`dvc repro --single-item <stage>` in `repo`, streaming its output; StageFailed on error."""
    repo = Path(repo)
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    # Its own process group: a cancelled or failed flow ends dvc and the stage it runs, not only dvc.
    proc = subprocess.Popen(
        _dvc_repro_cmd(stage, force), cwd=repo, env=dvc_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1, start_new_session=True,
    )
    reaper = GroupReaper()  # a flow process killed outright leaves no stage running
    reaper.register(proc.pid)
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                on_line(line)
        code = proc.wait()
    except BaseException:
        _end_group(proc)
        raise
    finally:
        reaper.unregister(proc.pid)
        reaper.close()
    if code != 0:
        raise StageFailed(f"stage {stage} failed (dvc exit code {code}); last output:\n" + "\n".join(tail))


def changed_stages(repo: str | Path) -> set[str]:
    """The stages `dvc status` reports as changed (deps, params, command or outputs differ from dvc.lock)."""
    repo = Path(repo)
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, env=dvc_env(repo),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StageFailed(f"dvc status failed (exit code {result.returncode}):\n{result.stderr[-3000:]}")
    return set(json.loads(result.stdout or "{}"))


def stages_to_run(repo: str | Path, plan: StagePlan, force: bool = False) -> list[str]:
    """What `dvc repro` would run, in plan order: every changed stage and everything downstream of one.

    A downstream stage whose inputs turn out unchanged is skipped by its own `dvc repro --single-item`.
    """
    if force:
        return list(plan.order)
    chosen = plan.downstream_closure(changed_stages(repo) & set(plan.order))
    return [stage for stage in plan.order if stage in chosen]


@dataclass
class StageRun:
    stage: str
    seconds: float
    returncode: int


def run_stages(
    repo: str | Path,
    plan: StagePlan,
    stages: Iterable[str],
    jobs: int,
    force: bool = False,
    limited: Callable[[str], bool] = lambda stage: False,
    limit: int | None = None,
    on_line: Callable[[str, str], None] = lambda stage, line: log.info("[%s] %s", stage, line),
) -> list[StageRun]:
    """Run `stages` (a subset of the plan) through DVC, up to `jobs` at once, each once its upstream ones are done.

    `limited(stage)` stages (the GPU stages on a CUDA machine) run at most `limit` at a time. After a failure no
    new stage starts, the running ones finish (their results are recorded), and StageFailed names the first
    failure with its last output lines. Ctrl-C ends every running stage's process group; so does the
    GroupReaper if this process is killed outright.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    repo = Path(repo)
    chosen = set(stages)
    pending = [stage for stage in plan.launch_order() if stage in chosen]
    done = set(plan.order) - chosen  # the stages not chosen are up to date: nothing waits for them
    finished: queue.Queue[tuple[str, int]] = queue.Queue()
    running: dict[str, tuple[subprocess.Popen, float, deque[str]]] = {}
    runs: list[StageRun] = []
    failure: str | None = None
    reaper = GroupReaper()

    def pump(stage: str, proc: subprocess.Popen, tail: deque[str]) -> None:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                on_line(stage, line)
        finished.put((stage, proc.wait()))

    def start(stage: str) -> None:
        proc = subprocess.Popen(
            _dvc_repro_cmd(stage, force), cwd=repo, env=dvc_env(repo), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
        )
        reaper.register(proc.pid)
        tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
        running[stage] = (proc, time.monotonic(), tail)
        threading.Thread(target=pump, args=(stage, proc, tail), daemon=True).start()

    try:
        while pending or running:
            if failure is None:
                for stage in plan.startable(pending, done, running, jobs, limited, limit):
                    pending.remove(stage)
                    start(stage)
            if not running:  # nothing can start: a failure, or a cycle DVC would have refused
                break
            stage, code = finished.get()
            proc, started, tail = running.pop(stage)
            reaper.unregister(proc.pid)
            runs.append(StageRun(stage, time.monotonic() - started, code))
            if code != 0:
                failure = failure or (f"stage {stage} failed (dvc exit code {code}); last output:\n" + "\n".join(tail))
            else:
                done.add(stage)
    except BaseException:
        for proc, _, _ in running.values():
            _end_group(proc)
        raise
    finally:
        reaper.close()
    if failure:
        raise StageFailed(failure)
    if pending:  # never with a DAG DVC accepted: every stage's upstream stages are in the plan before it
        raise StageFailed(f"could not start {', '.join(pending)}: their upstream stages never finished")
    return runs


def _end_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the run's process group (DVC then releases its lock), SIGKILL what is left after grace_s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def persisted_outputs(repo: str | Path, targets: Iterable[str]) -> list[Path]:
    """The cached `persist: true` outputs of the targets' stages: the checkpoint folders a training stage
    resumes from. A forced re-run deletes them first, else it would resume at the last step and train nothing."""
    from dvc.repo import Repo

    found: list[Path] = []
    with Repo(str(repo)) as dvc_repo:
        for target in targets:
            dvcfile, _, name = target.rpartition(":")
            for stage in dvc_repo.stage.collect(f"{os.path.join(dvc_repo.root_dir, dvcfile or 'dvc.yaml')}:{name}"):
                found += [Path(out.fs_path) for out in stage.outs if out.persist and out.use_cache]
    return found


def clear_for_retrain(repo: str | Path, targets: Iterable[str]) -> list[Path]:
    """Delete the targets' checkpoint folders (persisted_outputs); their metrics and reports stay until rewritten."""
    cleared = []
    for path in persisted_outputs(repo, targets):
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            log.info("retrain: removed %s", path)
            cleared.append(path)
    return cleared


def retrain(argv: list[str] | None = None) -> int:
    """`python -m flows.dag STAGE...` (make retrain STAGE=...): train the stages again from scratch."""
    targets = sys.argv[1:] if argv is None else argv
    if not targets:
        print("usage: python -m flows.dag STAGE [STAGE...]   (e.g. train_scrc@scrc_full)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    repo = Path.cwd()
    clear_for_retrain(repo, targets)
    for target in targets:
        run_dvc_stage(repo, target, force=True, on_line=print)
    return 0


if __name__ == "__main__":
    sys.exit(retrain())
