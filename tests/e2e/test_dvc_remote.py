"""The DVC remote round trip of `make push` / `make pull`, with the remote the repo ships (.dvc/config: the
folder refexp-remote beside the repository): copy A reproduces a few cheap stages (a persisted training
output among them) and pushes; B, a fresh git clone of A, pulls; B is then up to date and `dvc repro` of
those stages runs nothing."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from refexp.config import load_config
from tests.conftest import REPO_ROOT
from tests.repo_copy import copy_repo, run

# fetch_data@{referit,coco}, prepare_{referit,coco} and pretrain_backbone (a `persist: true` model folder with
# its checkpoint, and `cache: false` metrics and plots): about 30 s on the tiny config.
TARGETS = ["prepare_referit@referit", "pretrain_backbone"]
STAGES = {"fetch_data@referit", "fetch_data@coco", "prepare_referit@referit", "prepare_coco@coco", "pretrain_backbone"}


def dvc(work: Path, *args: str) -> subprocess.CompletedProcess:
    result = run([sys.executable, "-m", "dvc", *args], work)
    assert result.returncode == 0, f"dvc {' '.join(args)} in {work}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def git(work: Path, *args: str) -> subprocess.CompletedProcess:
    result = run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], work)
    assert result.returncode == 0, result.stderr
    return result


def make_dvc_args(work: Path, target: str) -> list[str]:
    """The arguments of the `dvc` command `make <target>` runs after setup (printed by `make -n`, which runs
    nothing: the copy has no .venv of its own, and the test runs the same command with this one's)."""
    result = run(["make", "-n", "-s", "--no-print-directory", target], work)
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1].split()
    assert command[0] == ".venv/bin/dvc", command
    return command[1:]


def tree_digest(work: Path, *roots: str) -> dict[str, str]:
    """relative path -> sha256 of every file under the roots."""
    return {
        str(path.relative_to(work)): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots for path in sorted((work / root).rglob("*")) if path.is_file()
    }


def test_every_output_travels_by_the_remote_or_by_git():
    """What `make push` cannot carry is in git: every cached output of dvc.yaml lies under data/ or models/
    (git-ignored: the remote carries it, persisted checkpoints included), every `cache: false` one under
    reports/ (tracked by git, never pushed)."""
    from dvc.repo import Repo

    paths = load_config(REPO_ROOT / "params.yaml").paths
    cached, uncached = [], []
    with Repo(str(REPO_ROOT)) as dvc_repo:
        for stage in dvc_repo.index.stages:
            for out in stage.outs:
                (cached if out.use_cache else uncached).append((out.def_path, out.persist))
    assert cached and uncached and any(persist for _, persist in cached)
    for path, _ in cached:
        assert Path(path).parts[0] in (paths.data, paths.models), path
    for path, _ in uncached:
        assert Path(path).parts[0] == paths.reports, path
    ignored = run(["git", "check-ignore", "--no-index", *(p for p, _ in cached + uncached)], REPO_ROOT).stdout.split()
    assert set(ignored) == {p for p, _ in cached}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Path:
    """Copy A under <root>/a, its stages reproduced, committed and pushed to <root>/refexp-remote."""
    root = tmp_path_factory.mktemp("remote")
    a = copy_repo(root / "a")
    # Only what this test computes is in dvc.lock: `dvc pull` in the clone fetches every entry of it.
    (a / "dvc.lock").unlink()
    dvc(a, "repro", *TARGETS)
    git(a, "add", "-A")
    git(a, "commit", "-qm", "reproduced")
    assert make_dvc_args(a, "push") == ["push"]
    dvc(a, *make_dvc_args(a, "push"))
    return a


@pytest.mark.slow  # about 30 s of stages, then DVC's push, a clone and a pull
def test_push_fills_the_default_remote_beside_the_repo(pushed):
    remote = pushed.parent / "refexp-remote"
    listed = dvc(pushed, "remote", "list").stdout.split()
    assert listed[:2] == ["storage", str(remote)]
    assert dvc(pushed, "config", "core.remote").stdout.strip() == "storage"
    assert len(list((remote / "files" / "md5").rglob("*"))) > 10
    # Everything in dvc.lock is on the remote.
    assert json.loads(dvc(pushed, "status", "--cloud", "--json").stdout) == {}


@pytest.mark.slow
def test_fresh_clone_pulls_and_reproduces_nothing(pushed):
    b = pushed.parent / "b"
    git(pushed.parent, "clone", "-q", str(pushed), str(b))
    assert set(yaml.safe_load((b / "dvc.lock").read_text())["stages"]) == STAGES
    # git brings the code, dvc.lock and the `cache: false` metrics; data/ and models/ are not there yet.
    assert not (b / "data").exists() and not (b / "models").exists()
    assert (b / "reports" / "metrics" / "pretrain_backbone" / "tiny.json").is_file()

    assert make_dvc_args(b, "pull")[0] == "pull"
    dvc(b, *make_dvc_args(b, "pull"))

    # Byte for byte what A computed, the persisted training folder and its checkpoint included.
    assert tree_digest(b, "data", "models") == tree_digest(pushed, "data", "models")
    assert (b / "models" / "backbone" / "tiny" / "checkpoint.pt").is_file()
    assert json.loads(dvc(b, "status", "--with-deps", *TARGETS, "--json").stdout) == {}
    repro = dvc(b, "repro", *TARGETS)
    assert "Running stage" not in repro.stdout, repro.stdout[-3000:]
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in repro.stdout, stage
    assert tree_digest(b, "data", "models", "reports") == tree_digest(pushed, "data", "models", "reports")


@pytest.mark.slow
def test_a_file_the_remote_lacks_is_reported_and_left_to_repro(pushed):
    """A clone pointed (--local, the per-machine override) at a remote missing one stage's output: `make pull`
    warns with its hash, fetches the rest, and that stage (with what depends on it) is out of date, never
    taken for computed."""
    damaged = pushed.parent / "damaged-remote"
    shutil.copytree(pushed.parent / "refexp-remote", damaged)
    outs = yaml.safe_load((pushed / "dvc.lock").read_text())["stages"]["prepare_coco@coco"]["outs"]
    md5 = next(out["md5"] for out in outs if out["path"] == "data/prepare_coco/coco")
    (damaged / "files" / "md5" / md5[:2] / md5[2:]).unlink()
    c = pushed.parent / "c"
    git(pushed.parent, "clone", "-q", str(pushed), str(c))
    dvc(c, "remote", "modify", "--local", "storage", "url", str(damaged))
    assert dvc(c, "remote", "list").stdout.split()[:2] == ["storage", str(damaged)]

    pull = dvc(c, *make_dvc_args(c, "pull"))

    assert md5 in pull.stdout + pull.stderr
    assert not (c / "data" / "prepare_coco" / "coco").exists()
    assert (c / "data" / "prepare_referit" / "referit" / "tuples.parquet").is_file()
    status = json.loads(dvc(c, "status", "--with-deps", *TARGETS, "--json").stdout)
    assert {"prepare_coco@coco", "pretrain_backbone"} <= set(status)
    assert not {"fetch_data@referit", "fetch_data@coco", "prepare_referit@referit"} & set(status)
