"""`dvc repro` of the whole DAG on a tiny synthetic config, in a temporary copy of the repo."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, TINY_OVERRIDES, deep_merge

pytestmark = pytest.mark.slow

# Extra shrinking for stages that train: the DAG must finish in a couple of minutes here.
E2E_OVERRIDES: dict = {
    "synthetic": {"n_images": 24},
    "training": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 2},
    "pretrain_backbone": {"crop_size": 16, "training": {"steps": 3, "batch_size": 4}},
    "scrc": {"embed_dim": 8, "hidden": 16, "feature_dim": 8, "image_size": 64, "crop_size": 16, "n_proposals": 12,
             "figure_examples": 2, "pretrain_training": {"steps": 3}, "training": {"steps": 4}},
    "attention_regression": {"training": {"steps": 4, "batch_size": 8}, "figure_examples": 2},
    "build_region_benchmark": {"meteor_jvms": 1, "dask": {"local_workers": 1, "join_blocks": 2}},
}
TOP_LEVEL_IGNORED = {".venv", ".git", "data", "models", ".pytest_cache", ".prefect", "reports"}
ANYWHERE_IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info")


def _ignore(directory: str, names: list[str]) -> set[str]:
    """Skip generated artifacts: the copy starts from sources and params only."""
    ignored = set(ANYWHERE_IGNORED(directory, names))
    if Path(directory) == REPO_ROOT:
        ignored |= TOP_LEVEL_IGNORED & set(names)
    if Path(directory) == REPO_ROOT / ".dvc":
        ignored |= {"cache", "tmp"} & set(names)
    return ignored


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e") / "repo"
    shutil.copytree(REPO_ROOT, work, ignore=_ignore)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params = deep_merge(deep_merge(params, TINY_OVERRIDES), E2E_OVERRIDES)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        assert _run(cmd, work).returncode == 0
    result = _run([sys.executable, "-m", "dvc", "repro"], work)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work


def test_repro_writes_data_report(reproduced):
    report = (reproduced / "reports" / "data.md").read_text()
    assert "| train |" in report and "| test |" in report
    assert "git revision:" in report
    assert (reproduced / "reports" / "figures" / "data" / "expression_lengths.png").stat().st_size > 1000


def test_every_stage_ran_and_reports_exist(reproduced):
    stages = _run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], reproduced).stdout.split()
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    assert set(stages) == set(lock)
    for report in ("data", "backbone", "scrc", "attention_regression", "index"):
        assert (reproduced / "reports" / f"{report}.md").stat().st_size > 200
    index = (reproduced / "reports" / "index.md").read_text()
    assert "| evaluate_scrc | scrc_full |" in index and "| evaluate_attention_regression | attention_full |" in index
    # Every row of this run is the embedded world's, in its own section.
    assert "### Embedded world (synthetic data, `make run`)" in index and "### Real data" not in index


def test_repro_is_complete_and_up_to_date(reproduced):
    status = _run([sys.executable, "-m", "dvc", "status"], reproduced)
    assert status.returncode == 0
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == "", status.stdout


def test_tuples_follow_schema(reproduced):
    import pandas as pd

    from refexp.data.schema import COLUMNS

    df = pd.read_parquet(reproduced / "data" / "prepare_referit" / "referit" / "tuples.parquet")
    assert list(df.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert set(df["split"]) == {"train", "val", "test"}
    assert (df["x2"] >= df["x1"]).all() and (df["y2"] >= df["y1"]).all()
    assert df["image_path"].map(lambda p: (reproduced / p).exists()).all()
