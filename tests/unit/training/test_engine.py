"""The training engine: determinism, exact resume after a stop or a kill, NaN stop, corrupt
checkpoints, workers, outputs."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from refexp.config import TrainingConfig
from refexp.training import engine
from refexp.training.engine import CheckpointError, NonFiniteLossError, fit
from refexp.training.seed import seed_everything

REPO = Path(__file__).resolve().parents[3]


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def make_setup(delay: float = 0.0, steps: int = 24, **overrides):
    seed_everything(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(40, generator=g)
    data = TensorDataset(x, y)
    model = TinyNet()

    def loss_fn(model, batch):
        if delay:
            time.sleep(delay)
        xb, yb = batch
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        return loss, {"mse": float(loss.detach())}

    cfg = TrainingConfig(**{"steps": steps, "batch_size": 8, "lr": 0.01, "optimizer": "sgd",
                            "schedule": "cosine", "warmup_steps": 2, "checkpoint_every": 5,
                            "log_every": 2, **overrides})
    return model, data, loss_fn, cfg


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loss_falls_and_outputs_are_written(tmp_path):
    model, data, loss_fn, cfg = make_setup(steps=60)
    m = fit(model, data, loss_fn, cfg, tmp_path / "run", seed=3, progress=False,
            metrics_path=tmp_path / "m.json", curve_path=tmp_path / "curve.csv",
            eval_fn=lambda mdl: {"eval/mse": float(torch.nn.functional.mse_loss(mdl(data.tensors[0]), data.tensors[1]))})
    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(2, 61, 2))
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    assert {"loss", "lr", "samples_per_s", "mse"} <= set(rows[0])
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["train/steps"] == 60 and saved["eval/mse"] == m["eval/mse"] < 1.0
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_same_seed_same_weights_and_workers_do_not_change_the_result(tmp_path):
    runs = []
    for i, workers in enumerate([0, 0, 2]):
        model, data, loss_fn, cfg = make_setup(steps=12, num_workers=workers)
        fit(model, data, loss_fn, cfg, tmp_path / str(i), seed=3, progress=False)
        runs.append(weights(model))
    assert_same_weights(runs[0], runs[1])
    assert_same_weights(runs[0], runs[2])
    model, data, loss_fn, cfg = make_setup(steps=12)
    fit(model, data, loss_fn, cfg, tmp_path / "other", seed=4, progress=False)
    assert not torch.equal(weights(model)["net.0.weight"], runs[0]["net.0.weight"])


@pytest.mark.parametrize("stop_at", [5, 7, 13])  # on a checkpoint step, mid-window, mid-epoch
def test_resume_after_stop_is_exact(tmp_path, stop_at):
    model, data, loss_fn, cfg = make_setup()
    full = fit(model, data, loss_fn, cfg, tmp_path / "full", seed=3, progress=False,
               curve_path=tmp_path / "full.csv")
    expected = weights(model)

    model, data, loss_fn, cfg = make_setup()
    part = fit(model, data, loss_fn, cfg, tmp_path / "resumed", seed=3, progress=False, stop_after_steps=stop_at)
    assert part["train/steps"] == stop_at and part["train/stopped_early"]
    model, data, loss_fn, cfg = make_setup()  # a fresh process would rebuild the model from scratch
    resumed = fit(model, data, loss_fn, cfg, tmp_path / "resumed", seed=3, progress=False,
                  curve_path=tmp_path / "resumed.csv")
    assert_same_weights(weights(model), expected)
    assert resumed["train/loss"] == full["train/loss"]
    strip = lambda p: [(r["step"], r["loss"], r["lr"]) for r in csv.DictReader(p.open())]
    assert strip(tmp_path / "resumed.csv") == strip(tmp_path / "full.csv")


def test_resume_after_kill_is_exact(tmp_path):
    model, data, loss_fn, cfg = make_setup()
    fit(model, data, loss_fn, cfg, tmp_path / "full", seed=3, progress=False)
    expected = weights(model)

    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.unit.training._engine_job", str(run_dir), "0.15"],
                            cwd=REPO, env=env)
    ckpt = run_dir / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # kill somewhere after the first checkpoint, mid-run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = engine.load_checkpoint(ckpt)
    assert 5 <= state["step"] < cfg.steps, "the job should have been killed mid-run"

    model, data, loss_fn, cfg = make_setup()
    fit(model, data, loss_fn, cfg, run_dir, seed=3, progress=False)
    assert_same_weights(weights(model), expected)


def test_nan_loss_stops_naming_the_step(tmp_path):
    model, data, _, cfg = make_setup()
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        return (loss * float("nan") if calls["n"] == 4 else loss), {}

    with pytest.raises(NonFiniteLossError, match="at step 4"):
        fit(model, data, loss_fn, cfg, tmp_path, seed=3, progress=False)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncate"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    model, data, loss_fn, cfg = make_setup()
    fit(model, data, loss_fn, cfg, tmp_path, seed=3, progress=False, stop_after_steps=5)
    ckpt = tmp_path / "checkpoint.pt"
    if content == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    else:
        ckpt.write_bytes(content)
    model, data, loss_fn, cfg = make_setup()
    with pytest.raises(CheckpointError, match="checkpoint.pt is corrupt"):
        fit(model, data, loss_fn, cfg, tmp_path, seed=3, progress=False)


def test_checkpoint_of_another_config_is_discarded(tmp_path, caplog):
    model, data, loss_fn, cfg = make_setup()
    fit(model, data, loss_fn, cfg, tmp_path, seed=3, progress=False, stop_after_steps=5)
    model, data, loss_fn, cfg = make_setup(lr=0.02)
    with caplog.at_level("INFO"):
        m = fit(model, data, loss_fn, cfg, tmp_path, seed=3, progress=False)
    assert m["train/steps"] == cfg.steps
    assert "discarded, training from step 0" in caplog.text and "resuming" not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_finished_run_is_not_retrained(tmp_path):
    model, data, loss_fn, cfg = make_setup()
    first = fit(model, data, loss_fn, cfg, tmp_path, seed=3, progress=False)
    model, data, loss_fn, cfg = make_setup()
    calls = []
    again = fit(model, data, lambda m, b: calls.append(1) or loss_fn(m, b), cfg, tmp_path, seed=3, progress=False)
    assert not calls and again["train/loss"] == first["train/loss"]


def test_training_overrides_are_validated():
    cfg = TrainingConfig()
    assert cfg.merged({"steps": 7}).steps == 7
    from refexp.config import ConfigError
    with pytest.raises(ConfigError, match="stepz"):
        cfg.merged({"stepz": 7})


def test_step_schedule_is_caffes():
    from refexp.training.engine import build_optimizer, build_scheduler

    model = torch.nn.Linear(2, 1)
    cfg = TrainingConfig(lr=0.1, optimizer="sgd", schedule="step", step_size=3, step_gamma=0.5, steps=10)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
