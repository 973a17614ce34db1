"""The engine on 2 CPU processes (torchrun, gloo): with the same global batch and seed it reaches a 1-process
run's weights, curve and metrics within float tolerance; it resumes exactly; a NaN on one rank stops both;
each rank sees its own slice of every global batch."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from refexp.config import ConfigError, TrainingConfig
from refexp.training import engine
from refexp.training.engine import EpochBatchSampler, RankSlice, check_split
from tests.unit.training import _ddp_job

REPO = Path(__file__).resolve().parents[3]
TIMING = ("train/seconds", "train/samples_per_s")


def torchrun(out: Path, stop_after: int = 0, nan_at_step: int = 0, n: int = 2) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "tests.unit.training._ddp_job", str(out), str(stop_after), str(nan_at_step)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def curve(path: Path) -> list[dict]:
    return [{k: float(v) for k, v in row.items() if k != "samples_per_s"} for row in csv.DictReader(path.open())]


def metrics(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    _ddp_job.train(out)
    return out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two")
    result = torchrun(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_processes_reach_the_one_process_weights_curve_and_metrics(one_process, two_processes):
    single = load(one_process / "weights.rank0.pt")
    ranks = [load(two_processes / f"weights.rank{r}.pt") for r in (0, 1)]
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between the ranks"
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6, msg=key)
    init = _ddp_job.setup()[0].state_dict()  # the initial weights
    assert torch.equal(ranks[0]["unused.weight"], init["unused.weight"]), "an unused parameter moved"
    assert not torch.allclose(ranks[0]["body.0.weight"], init["body.0.weight"])

    one, two = curve(one_process / "curve.csv"), curve(two_processes / "curve.csv")
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(2, 21, 2))
    for a, b in zip(one, two):
        # loss and the loss_fn's extra are means over both ranks: the global batch's, as on 1 process
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["mae"] == pytest.approx(a["mae"], rel=1e-5)
        assert b["lr"] == a["lr"]
    m1, m2 = metrics(one_process / "metrics.json"), metrics(two_processes / "metrics.json")
    assert m2.keys() == m1.keys() and m2["train/steps"] == m1["train/steps"] == 20
    assert m2["train/loss"] == pytest.approx(m1["train/loss"], rel=1e-5)

    # rank 0 alone wrote the checkpoint; it holds both ranks' RNG states for an exact resume
    state = engine.load_checkpoint(two_processes / "run" / "checkpoint.pt")
    assert state["step"] == 20 and len(state["rank_rng"]) == 2
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])
    assert sorted(p.name for p in (two_processes / "run").iterdir()) == ["checkpoint.pt"]
    assert "rank_rng" not in engine.load_checkpoint(one_process / "run" / "checkpoint.pt")


STOP_AT = 7  # mid-window, mid-epoch


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A 2-process run stopped after STOP_AT steps (its checkpoint written)."""
    out = tmp_path_factory.mktemp("stopped")
    result = torchrun(out, stop_after=STOP_AT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert engine.load_checkpoint(out / "run" / "checkpoint.pt")["step"] == STOP_AT
    return out


@pytest.mark.slow
def test_a_stopped_two_process_run_resumes_exactly(tmp_path, stopped, two_processes):
    shutil.copytree(stopped, tmp_path, dirs_exist_ok=True)
    resumed = torchrun(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {tmp_path / 'run' / 'checkpoint.pt'} at step {STOP_AT}" in resumed.stderr
    done, reference = load(tmp_path / "weights.rank0.pt"), load(two_processes / "weights.rank0.pt")
    for key in reference:
        assert torch.equal(done[key], reference[key]), key
    assert curve(tmp_path / "curve.csv") == curve(two_processes / "curve.csv")
    assert metrics(tmp_path / "metrics.json") == metrics(two_processes / "metrics.json")


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_on_one_process(tmp_path, stopped, one_process):
    shutil.copytree(stopped, tmp_path, dirs_exist_ok=True)
    _ddp_job.train(tmp_path)  # the rest on 1 process: the same global batches, rank 0's random stream
    done, reference = load(tmp_path / "weights.rank0.pt"), load(one_process / "weights.rank0.pt")
    for key in reference:
        torch.testing.assert_close(done[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_both_naming_the_step(tmp_path):
    result = torchrun(tmp_path, nan_at_step=3)
    assert result.returncode != 0
    assert result.stderr.count("NonFiniteLossError: loss is nan at step 3") == 2, result.stderr[-3000:]


def test_each_rank_gets_its_contiguous_slice_of_every_global_batch():
    whole = EpochBatchSampler(44, 8, seed=3, epoch=1, start=2)
    slices = [list(RankSlice(EpochBatchSampler(44, 8, seed=3, epoch=1, start=2), r, 4)) for r in range(4)]
    assert all(len(s) == len(whole) == 3 for s in slices)
    for i, batch in enumerate(whole):
        assert [j for s in slices for j in s[i]] == batch  # disjoint, in order, covering the global batch


def test_a_batch_that_does_not_split_is_a_config_error():
    with pytest.raises(ConfigError, match="batch_size 10 does not split over 4 processes"):
        check_split(100, 10, 4)
    with pytest.raises(ConfigError, match="6 examples .* do not split over 4 processes"):
        check_split(6, 8, 4)
    check_split(6, 8, 2)
    with pytest.raises(ValueError, match="batch_size 30 does not split over devices 4"):
        TrainingConfig(batch_size=30, devices=4)
    with pytest.raises(ConfigError, match="set it once, in training.devices"):
        TrainingConfig(devices=2).merged({"devices": 4})
    assert TrainingConfig(devices=2).merged({"batch_size": 6}).devices == 2


def test_devices_is_not_part_of_a_runs_identity():
    # A launch setting: the fingerprint (and run digests, provenance) of a 1-device run, so the committed
    # checkpoints stay valid and a checkpoint resumes on any number of devices.
    model = torch.nn.Linear(2, 1)
    assert "devices" not in TrainingConfig(devices=2).model_dump()
    two, one = TrainingConfig(devices=2), TrainingConfig()
    assert engine._fingerprint(two, 0, model, "k") == engine._fingerprint(one, 0, model, "k")
