"""Which torchrun rank this process is, read from the environment (no torch import).

With `training.devices` > 1 a training stage launches itself through torchrun (stages/_cli.py): every
rank runs the whole stage, the engine shards each global batch across the ranks and averages the
gradients (refexp.training.engine), and rank 0 alone writes artifacts (refexp.artifacts drops the
other ranks' writes), prints the stage's metrics and shows progress.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each rank's environment; a process without them is
rank 0 of 1.
"""
from __future__ import annotations

import os

# The stage process that launched the ranks (it became torchrun's agent): each rank dies with it.
LAUNCHER_PID = "REFEXP_LAUNCHER_PID"


def launched() -> bool:
    """True in a process started by torchrun (or any env:// launcher setting RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ["RANK"]) if launched() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank())) if launched() else 0


def world_size() -> int:
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def writes_outputs() -> bool:
    """Rank 0 writes every artifact; the other ranks compute the same things and write nothing."""
    return rank() == 0
