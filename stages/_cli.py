"""The shared CLI of every stage: `python -m stages.<name> [item]`.

Loads params.yaml into the typed config, sets up logging, runs the stage and
prints its metrics. Stages take no hyper-parameter flags: only the item
(a dataset or variant name) chosen by dvc.yaml's foreach.

A user's mistake or a full or read-only disk ends in one line naming the file and
the cause (exit status 1), never a bare traceback; the traceback is logged at debug
level (REFEXP_LOG_LEVEL=DEBUG shows it).

A stage that trains (`stage_main(run, trains=True)`) with `training.devices` > 1 launches
itself through torchrun: this process becomes torchrun's agent (one process for DVC, Prefect
and a kill to see) and starts `python -m stages.<name> <item>` on that many ranks, each tied
to it so that killing it kills them (torchrun gives each rank a session of its own). Every
rank runs the stage; the engine shares out the batches, rank 0 writes the outputs and prints
the metrics (refexp.distributed). The other ranks log warnings only, tagged with their rank.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Callable

from refexp import distributed
from refexp.config import Config, ConfigError, load_config
from refexp.data.archives import ArchiveError, UnsafeArchiveError
from refexp.data.official import DownloadError, ManifestError
from refexp.data.skips import DataError
from refexp.errors import CheckpointError, NonFiniteLossError, describe_os_error
from refexp.processes import die_with_parent

log = logging.getLogger("stages")
# Errors whose message already names the file or the setting and what to do.
USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, ArchiveError, UnsafeArchiveError,
               DownloadError, ManifestError)  # fetch_data's: a bad archive, download or manifest


def stage_main(run: Callable[..., dict], takes_item: bool = True, trains: bool = False) -> None:
    rank = distributed.rank()
    tag = f" (rank {rank})" if rank else ""
    logging.basicConfig(level=os.environ.get("REFEXP_LOG_LEVEL", "WARNING" if rank else "INFO").upper(),
                        format=f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")
    args = sys.argv[1:]
    if len(args) != (1 if takes_item else 0):
        usage = "<item>" if takes_item else ""
        sys.exit(f"usage: python -m {run.__module__} {usage}".rstrip())
    try:
        cfg: Config = load_config()
        if trains and distributed.launched():
            _join_launcher()
        elif trains and cfg.training.devices > 1:
            _launch(_module_name(run), args, cfg.training.devices)
            return
        metrics = run(cfg, *args)
    except USER_ERRORS as err:
        log.debug("traceback", exc_info=True)
        sys.exit(f"error{tag}: {err}")
    except OSError as err:
        log.debug("traceback", exc_info=True)
        sys.exit(f"error{tag}: {describe_os_error(err)}")
    if distributed.writes_outputs():
        print(json.dumps(metrics, indent=2, sort_keys=True))


def _module_name(run: Callable[..., dict]) -> str:
    """The stage's module as `python -m` names it (run.__module__ is "__main__" there)."""
    spec = getattr(sys.modules.get(run.__module__), "__spec__", None)
    return spec.name if spec is not None else run.__module__


def _launch(module: str, args: list[str], devices: int) -> None:
    """Run `python -m module args` on `devices` ranks under torchrun, this process being its agent."""
    import torch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    if torch.cuda.is_available() and torch.cuda.device_count() < devices:
        raise ConfigError(f"training.devices is {devices} but this machine has {torch.cuda.device_count()} "
                          "CUDA devices")
    os.environ[distributed.LAUNCHER_PID] = str(os.getpid())
    # What torchrun sets (with a banner) when unset; the engine sets training.cpu_threads itself.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    log.info("%s: %d processes (training.devices) through torchrun", module, devices)
    try:
        torchrun(get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(devices),
                                               "--module", module, *args]))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        why = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit status {failure.exitcode}"
        sys.exit(f"error: {module} failed on rank {rank} of {devices} ({why}); its message is above")
    except SignalException as err:  # SIGTERM/SIGINT: torchrun has stopped the ranks
        sys.exit(128 + int(err.sigval))


def _join_launcher() -> None:
    """A rank: die with the stage process that launched it, and take this rank's GPU before the stage
    puts anything on one."""
    launcher = os.environ.get(distributed.LAUNCHER_PID)
    if launcher:
        die_with_parent(int(launcher))
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(distributed.local_rank())
