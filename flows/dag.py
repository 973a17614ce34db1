"""The DVC side of the flow, without Prefect: which stages, in which order, and running one.

The stage list and its order come from DVC's own graph of dvc.yaml (foreach items
expanded, e.g. `fetch_data@referit`), so there is no second DAG. A stage runs as
`dvc repro --single-item <stage>`, so dvc.lock stays the record and a plain
`dvc repro` afterwards has nothing to do.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections import deque
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


def stage_order(repo: str | Path, targets: Iterable[str] | None = None) -> list[str]:
    """dvc.yaml stages (with foreach items) in topological order, dependencies first.

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
        return [names[stage] for stage in order]


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


def run_dvc_stage(
    repo: str | Path,
    stage: str,
    force: bool = False,
    on_line: Callable[[str], None] = log.info,
) -> None:
    """`dvc repro --single-item <stage>` in `repo`, streaming its output; StageFailed on error."""
    repo = Path(repo)
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    if force:
        cmd.append("--force")
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    # Its own process group: a cancelled or failed flow ends dvc and the stage it runs, not only dvc.
    proc = subprocess.Popen(
        cmd, cwd=repo, env=dvc_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True,
    )
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
    if code != 0:
        raise StageFailed(f"stage {stage} failed (dvc exit code {code}); last output:\n" + "\n".join(tail))


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
