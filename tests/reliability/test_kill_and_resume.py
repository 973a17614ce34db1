"""Every training stage, killed with SIGKILL mid-training under `dvc repro`, resumes from its checkpoint on
the next `dvc repro` (or the command a Prefect retry runs) and ends with the metrics of an uninterrupted run (made by `python -m flows.dag`, the
`make retrain` command, which also proves a forced re-run trains from step 0). A stage that fails keeps
the last good metrics and plots. All in a temporary copy of the repo at a tiny size."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.repo_copy import copy_repo, env_for, read_params, run, write_params

pytestmark = pytest.mark.slow

LONG = {"steps": 400, "checkpoint_every": 4, "log_every": 4}
# stage -> (the params path of its training overrides, its checkpoint folder, its metrics file)
STAGES = {
    "pretrain_backbone": (("pretrain_backbone", "training"), "models/backbone/tiny",
                          "reports/metrics/pretrain_backbone/tiny.json"),
    "pretrain_scrc": (("scrc", "pretrain_training"), "models/scrc/pretrained",
                      "reports/metrics/pretrain_scrc/pretrained.json"),
    "train_scrc@scrc_full": (("scrc", "training"), "models/scrc/scrc_full",
                             "reports/metrics/train_scrc/scrc_full.json"),
    "train_attention_regression@attention_full": (
        ("attention_regression", "training"), "models/attention_regression/attention_full",
        "reports/metrics/train_attention_regression/attention_full.json"),
    "train_text_objseg_lowres@text_objseg": (("text_objseg", "lowres_training"), "models/text_objseg_lowres/text_objseg",
                                             "reports/metrics/train_text_objseg_lowres/text_objseg.json"),
    "train_text_objseg_highres@text_objseg": (
        ("text_objseg", "highres_training"), "models/text_objseg_highres/text_objseg",
        "reports/metrics/train_text_objseg_highres/text_objseg.json"),
    "train_text_objseg_baseline@grounder": (
        ("text_objseg", "grounder", "training"), "models/text_objseg_baseline/grounder",
        "reports/metrics/train_text_objseg_baseline/grounder.json"),
}
TIMING = re.compile(r"seconds|per_s")
RESUMED = re.compile(r"resuming from \S+checkpoint\.pt at step (\d+)")


def _dvc(work: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], work)


def _non_timing(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not TIMING.search(k)}


def _kill_mid_training(work: Path, stage: str, checkpoint: Path) -> None:
    """Start `dvc repro -s stage` and SIGKILL its whole process group once the first checkpoint exists."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-s", stage], cwd=work, env=env_for(work),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        if proc.poll() is not None:
            pytest.fail(f"{stage} ended before its first checkpoint:\n{proc.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{stage} wrote no checkpoint in 300 s")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{stage} finished before the kill"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    work = copy_repo(tmp_path_factory.mktemp("reliability") / "repo")
    result = _dvc(work, "repro", *STAGES)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    params = read_params(work)
    for where, _, _ in STAGES.values():
        node = params
        for key in where[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(where[-1], {}).update(LONG)
    write_params(work, params)
    return work


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_killed_training_stage_resumes_to_the_uninterrupted_metrics(pipeline, stage):
    _, folder, metrics_file = STAGES[stage]
    checkpoint = pipeline / folder / "checkpoint.pt"
    checkpoint.unlink(missing_ok=True)  # the short run's (its params changed: it would be set aside anyway)
    _kill_mid_training(pipeline, stage, checkpoint)

    if stage.startswith("train_attention_regression"):
        # What a Prefect retry runs (flows.pipeline's task): `dvc repro --single-item <stage>`.
        from flows.dag import run_dvc_stage

        lines: list[str] = []
        run_dvc_stage(pipeline, stage, on_line=lines.append)
        output = "\n".join(lines)
    else:
        resumed = _dvc(pipeline, "repro", "-s", stage)
        output = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, output[-3000:]
    at_step = RESUMED.search(output)
    assert at_step, f"{stage} did not resume:\n{output[-3000:]}"
    assert 0 < int(at_step.group(1)) < LONG["steps"]
    after_resume = _non_timing(pipeline / metrics_file)
    assert after_resume["train/steps"] == LONG["steps"]

    # The reference: trained again from scratch, uninterrupted (make retrain STAGE=<stage>).
    fresh = run([sys.executable, "-m", "flows.dag", stage], pipeline)
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert "removed" in fresh.stderr + fresh.stdout and not RESUMED.search(fresh.stdout + fresh.stderr)
    assert _non_timing(pipeline / metrics_file) == after_resume
    assert _dvc(pipeline, "status", stage).stdout.strip() in ("", "Data and pipelines are up to date.")


def test_a_failed_stage_keeps_the_last_good_metrics_and_plots(pipeline):
    stage = "train_attention_regression@attention_full"
    kept = [pipeline / STAGES[stage][2], pipeline / "reports/plots/train_attention_regression/attention_full.csv"]
    assert _dvc(pipeline, "repro", "-s", stage).returncode == 0
    before = [p.read_bytes() for p in kept]
    good = read_params(pipeline)
    bad = read_params(pipeline)
    bad["attention_regression"]["training"]["schedule"] = "cosin"  # a typo DVC sees as a params change
    write_params(pipeline, bad)
    try:
        failed = _dvc(pipeline, "repro", "-s", stage)
    finally:
        write_params(pipeline, good)
    assert failed.returncode != 0
    assert "attention_regression.training" in failed.stderr and "schedule" in failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout
    assert [p.read_bytes() for p in kept] == before
