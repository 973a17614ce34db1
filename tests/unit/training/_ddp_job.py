"""Body of the multi-process engine tests: one `fit` of a small deterministic regression, run either in the
test's own process (1 process) or on every rank under torchrun (`python -m torch.distributed.run
--nproc-per-node 2 -m tests.unit.training._ddp_job OUT STOP NAN_AT_STEP`).

The loss calls `model.score`, not forward (as SCRC's calls log_likelihood), and the model has a parameter
the loss never uses: DDP must average the gradients anyway and leave that parameter's grad None. Each rank
saves its final weights to OUT/weights.rank<r>.pt (a test-only file, written directly); the engine writes
the checkpoint, curve and metrics.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from refexp.config import TrainingConfig
from refexp.training.seed import seed_everything

CFG = {"steps": 20, "batch_size": 8, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.01,
       "schedule": "cosine", "warmup_steps": 2, "checkpoint_every": 5, "log_every": 2, "grad_clip": 1.0}
N_EXAMPLES = 44  # 5 full batches an epoch, the tail dropped: 20 steps cross 4 epochs


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.unused = torch.nn.Linear(4, 4)  # no grad: SGD's weight decay must not move it

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


def setup(nan_at_step: int = 0, rank: int = 0):
    seed_everything(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_EXAMPLES, 4, generator=g)
    y = torch.sin(x @ torch.tensor([1.0, -2.0, 0.5, 0.3])) + 0.1 * torch.randn(N_EXAMPLES, generator=g)
    calls = {"n": 0}

    def loss_fn(model: Net, batch):
        calls["n"] += 1
        xb, yb = batch
        err = model.score(xb) - yb
        loss = (err ** 2).mean()
        if nan_at_step and calls["n"] == nan_at_step and rank == 1:
            loss = loss * float("nan")
        return loss, {"mae": float(err.detach().abs().mean())}

    return Net(), TensorDataset(x, y), loss_fn, TrainingConfig(**CFG)


def train(out: Path, stop_after: int = 0, nan_at_step: int = 0) -> dict:
    from refexp.training.engine import fit

    rank = int(os.environ.get("RANK", "0"))
    model, data, loss_fn, cfg = setup(nan_at_step, rank)
    metrics = fit(model, data, loss_fn, cfg, out / "run", seed=3, progress=False,
                  stop_after_steps=stop_after or None, curve_path=out / "curve.csv", metrics_path=out / "metrics.json")
    torch.save(model.state_dict(), out / f"weights.rank{rank}.pt")
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out_dir, stop, nan_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    train(out_dir, stop, nan_at)
