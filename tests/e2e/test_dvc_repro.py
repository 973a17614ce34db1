"""`make run`'s job (flows.repro: `dvc repro` with independent stages side by side) over the whole DAG on a
tiny synthetic config, in a temporary copy of the repo; a plain `dvc repro` afterwards has nothing to do."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.repo_copy import copy_repo
from tests.repo_copy import run as _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    work = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    # 127 stages, each a fresh Python that imports torch, two at a time: about 10 min on 2 cores (20 one at a
    # time), longer on a loaded CI box.
    result = _run([sys.executable, "-m", "flows.repro", "--repo", str(work)], work, timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "127 of 127 stage(s) to run, 2 at a time" in result.stdout
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
    for report in ("data", "backbone", "scrc", "attention_regression", "segmentation", "region_retrieval",
                   "vision_text_only", "index"):
        assert (reproduced / "reports" / f"{report}.md").stat().st_size > 200
    index = (reproduced / "reports" / "index.md").read_text()
    assert "| evaluate_scrc | scrc_full |" in index and "| evaluate_attention_regression | attention_full |" in index
    assert "| evaluate_grn | grn |" in index and "| evaluate_grn | grn_rpn |" in index
    assert "| evaluate_vision_text_only | refcocog_full |" in index
    # Every row of this run is the embedded world's, in its own section.
    assert "### Embedded world (synthetic data, `make run`)" in index and "### Real data" not in index


def test_repro_is_complete_and_up_to_date(reproduced):
    status = _run([sys.executable, "-m", "dvc", "status"], reproduced)
    assert status.returncode == 0
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == "", status.stdout
    # dvc.lock is the record: the plain `dvc repro` a user runs afterwards has nothing to do.
    repro = _run([sys.executable, "-m", "dvc", "repro"], reproduced)
    assert repro.returncode == 0 and "Running stage" not in repro.stdout, repro.stdout[-3000:]


def test_tuples_follow_schema(reproduced):
    import pandas as pd

    from refexp.data.schema import COLUMNS

    df = pd.read_parquet(reproduced / "data" / "prepare_referit" / "referit" / "tuples.parquet")
    assert list(df.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert set(df["split"]) == {"train", "val", "test"}
    assert (df["x2"] >= df["x1"]).all() and (df["y2"] >= df["y1"]).all()
    assert df["image_path"].map(lambda p: (reproduced / p).exists()).all()
