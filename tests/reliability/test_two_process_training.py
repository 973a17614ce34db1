"""A real training stage with `training.devices: 2` on CPU (torchrun, gloo): `python -m stages.<stage> <item>`
launches itself on 2 processes, reaches the metrics and weights of the same stage on 1 process within float
tolerance, and, killed with SIGKILL mid-training, leaves no rank running and resumes from its checkpoint to
exactly the metrics of an uninterrupted 2-process run. Tiny ReferIt-style world, train_attention_regression
with its frozen backbone (eval-mode batch norm) and no dropout, so 1 and 2 processes compute the same steps."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.stages.test_attention_regression import write_tiny_world

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STAGE, VARIANT = "stages.train_attention_regression", "attention_full"
STEPS = 60
METRICS = Path("reports/metrics/train_attention_regression") / f"{VARIANT}.json"
CHECKPOINT = Path("models/attention_regression") / VARIANT / "checkpoint.pt"
TIMING = re.compile(r"seconds|per_s")
# The text attention's output bias shifts every word's logit alike, so the softmax gives it a zero gradient up
# to rounding, and Adam's normalisation turns that rounding into lr-sized steps: it drifts by rounding alone
# (1.6e-3 apart after 60 steps, where every other weight is within 2e-6) and changes no output.
ROUNDING_DRIVEN = {"txt_att_out.bias"}
RESUMED = re.compile(r"resuming from \S+checkpoint\.pt at step (\d+)")


def params(devices: int) -> dict:
    return {
        "datasets": {name: {"format": name, "source": "synthetic"} for name in ("referit", "coco", "visual_genome")},
        "training": {"steps": STEPS, "batch_size": 8, "lr": 0.003, "checkpoint_every": 4, "log_every": 2,
                     "cpu_threads": 1, "devices": devices},
        "attention_regression": {
            "dataset": "referit", "backbone": "tiny", "pretrained": False, "freeze_backbone": True,
            "image_size": 32, "eval_batch_size": 16, "training": {},
            "model": {"embedding_dim": 8, "lstm_hidden": 12, "feature_grid": 4, "image_attention_hidden": 10,
                      "image_attention_layers": 2, "text_attention_hidden": 8, "region_hidden": 10,
                      "dropout": 0.0, "lambda_squared_error": 0.01},
            "variants": {VARIANT: {}},
        },
    }


def world(root: Path, devices: int) -> Path:
    write_tiny_world(root)
    (root / "params.yaml").write_text(yaml.safe_dump(params(devices), sort_keys=False))
    return root


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def stage(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", STAGE, VARIANT], cwd=root, env=env(), capture_output=True,
                          text=True, timeout=600)


def non_timing(root: Path) -> dict:
    return {k: v for k, v in json.loads((root / METRICS).read_text()).items() if not TIMING.search(k)}


def weights(root: Path) -> dict:
    return torch.load(root / CHECKPOINT, weights_only=True)["model"]


def processes_in(root: Path) -> list[int]:
    """Pids of live processes whose working directory is `root` (the stage, torchrun's agent, the ranks)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == root and (proc / "stat").read_text().split(") ")[1][0] not in "ZX":
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> Path:
    root = world(tmp_path_factory.mktemp("one") / "w", 1)
    result = stage(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = world(tmp_path_factory.mktemp("two") / "w", 2)
    result = stage(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result


def test_two_devices_reach_the_one_device_metrics_and_weights(one_device, two_devices):
    root, result = two_devices
    assert "2 processes (training.devices) through torchrun" in result.stderr
    printed = json.loads(result.stdout)  # rank 0 alone prints the metrics
    assert printed["train/steps"] == STEPS
    one, two = non_timing(one_device), non_timing(root)
    assert two.keys() == one.keys()
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    single, double = weights(one_device), weights(root)
    for key, value in single.items():
        if key in ROUNDING_DRIVEN:
            continue
        torch.testing.assert_close(double[key], value, rtol=1e-4, atol=1e-5, msg=key)
    # rank 1 wrote nothing: no temporary file of its own is left, and every output is rank 0's
    assert not [p for p in root.rglob("*rank1*")]
    assert (root / "reports/plots/train_attention_regression" / f"{VARIANT}.csv").exists()


def test_a_killed_two_device_stage_leaves_no_rank_and_resumes_to_the_uninterrupted_metrics(tmp_path, two_devices):
    reference, _ = two_devices
    root = world(tmp_path / "w", 2)
    proc = subprocess.Popen([sys.executable, "-m", STAGE, VARIANT], cwd=root, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (root / CHECKPOINT).exists():
        if proc.poll() is not None:
            pytest.fail(f"the stage ended before its first checkpoint:\n{proc.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no checkpoint in 300 s")
        time.sleep(0.005)
    assert len(processes_in(root)) == 3  # the stage (torchrun's agent) and its 2 ranks
    os.killpg(proc.pid, signal.SIGKILL)  # what test_kill_and_resume does to `dvc repro`
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the stage finished before the kill"
    deadline = time.monotonic() + 30
    while processes_in(root) and time.monotonic() < deadline:  # the ranks die with the agent
        time.sleep(0.1)
    assert not processes_in(root), "a rank outlived the killed stage"

    resumed = stage(root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    at_step = RESUMED.search(resumed.stderr)
    assert at_step, resumed.stderr[-3000:]
    assert 0 < int(at_step.group(1)) < STEPS
    assert non_timing(root) == non_timing(reference)
    done, uninterrupted = weights(root), weights(reference)
    for key, value in uninterrupted.items():
        assert torch.equal(done[key], value), key


def test_a_batch_that_does_not_split_over_the_devices_is_one_line(tmp_path):
    root = world(tmp_path / "w", 2)
    raw = params(2)
    raw["attention_regression"]["training"] = {"batch_size": 7}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = stage(root)
    assert result.returncode == 1
    assert "batch_size 7 does not split over devices 2" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "models").exists()
    shutil.rmtree(root)
