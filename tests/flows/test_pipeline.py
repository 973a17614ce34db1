"""The Prefect flow over a tiny DVC DAG, under prefect_test_harness."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from flows.dag import StageFailed, flows_config, stage_order
from flows.pipeline import pipeline
from refexp.config import ConfigError
from tests.conftest import REPO_ROOT
from tests.flows.conftest import dvc


def test_stage_order_comes_from_dvc_with_foreach_items(tiny_repo):
    assert stage_order(tiny_repo) == ["make_a", "flaky_b", "make_c@x", "make_c@y"]
    # A target brings its dependencies, like `dvc repro <target>`; a foreach group expands.
    assert stage_order(tiny_repo, ["make_c@y"]) == ["make_a", "flaky_b", "make_c@y"]
    assert stage_order(tiny_repo, ["make_c"]) == ["make_a", "flaky_b", "make_c@x", "make_c@y"]
    assert stage_order(tiny_repo, ["make_a"]) == ["make_a"]


def test_retry_policies_come_from_params(tiny_repo):
    cfg = flows_config(tiny_repo)
    assert cfg.retry_for("flaky_b").delays() == [0.2, 0.4]
    assert cfg.retry_for("make_c@x").retries == 0
    (tiny_repo / "params.yaml").write_text("flows: {stages: {x: {retries: -1}}}\n")
    with pytest.raises(ConfigError, match="retries"):
        flows_config(tiny_repo)


def test_repo_params_retry_downloads_and_training(repo_root):
    cfg = flows_config(repo_root)
    assert cfg.retry_for("fetch_data@referit").retries >= 2
    assert cfg.retry_for("fetch_data@referit").delays() == sorted(cfg.retry_for("fetch_data@referit").delays())
    assert cfg.retry_for("train_scrc@scrc_full").retries == 1


@pytest.mark.slow  # a Prefect test server plus ~12 `dvc` processes: 30-70 s on 2 shared cores
def test_flaky_stage_is_retried_and_dvc_status_is_clean_afterwards(harness, tiny_repo):
    results = pipeline(repo=str(tiny_repo))

    assert [(r["stage"], r["attempts"]) for r in results] == [
        ("make_a", 1), ("flaky_b", 2), ("make_c@x", 1), ("make_c@y", 1),
    ]
    assert (tiny_repo / "c_x.txt").read_text() == "abx"
    # dvc.lock is the record: every stage is in it, and a plain `dvc repro` has nothing to do.
    lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"make_a", "flaky_b", "make_c@x", "make_c@y"}
    assert json.loads(dvc(tiny_repo, "status", "--json").stdout) == {}
    assert "Running stage" not in dvc(tiny_repo, "repro").stdout

    # Up to date: a second run changes nothing; --force re-runs the chosen stage.
    before = (tiny_repo / "a.txt").stat().st_mtime_ns
    pipeline(repo=str(tiny_repo), targets=["make_a"])
    assert (tiny_repo / "a.txt").stat().st_mtime_ns == before
    pipeline(repo=str(tiny_repo), targets=["make_a"], force=True)
    assert (tiny_repo / "a.txt").stat().st_mtime_ns != before
    assert json.loads(dvc(tiny_repo, "status", "--json").stdout) == {}


@pytest.mark.slow
def test_stage_failing_after_its_retries_fails_the_flow_before_dependents(harness, tiny_repo):
    (tiny_repo / "params.yaml").write_text("flows: {default: {retries: 0}}\n")

    state = pipeline(repo=str(tiny_repo), return_state=True)

    assert state.is_failed()
    with pytest.raises(StageFailed, match=r"(?s)stage flaky_b failed \(dvc exit code \d+\).*simulated transient failure"):
        state.result()
    assert (tiny_repo / "a.txt").exists()
    assert not (tiny_repo / "c_x.txt").exists()


def test_cli_lists_stage_order_and_retries(tiny_repo):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--list", "--repo", str(tiny_repo), "--targets", "make_c@x"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    ).stdout
    assert out.splitlines() == [
        "make_a\tretries=0\tdelays=-\ttags=-",
        "flaky_b\tretries=2\tdelays=0.2s, 0.4s\ttags=-",
        "make_c@x\tretries=0\tdelays=-\ttags=-",
    ]
