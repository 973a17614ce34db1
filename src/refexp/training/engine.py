"""The one training engine: every model in the project trains through `fit`.

    fit(model, train_dataset, loss_fn, cfg, out_dir, *, seed, collate_fn=None, eval_fn=None,
        metrics_path=None, curve_path=None, deterministic=True, stop_after_steps=None,
        progress=True) -> dict

- `loss_fn(model, batch) -> (loss_tensor, {name: float})`; the batch is already on the device.
- `eval_fn(model) -> {name: float}` runs once after the last step (model in eval mode, no grad);
  its metrics are merged into the returned dict and the metrics JSON.
- Seeded once (`seed_everything`); on CPU every kernel is deterministic. The data order is a
  pure function of (seed, epoch): each epoch draws a permutation from a generator seeded with
  both, so the loader position is just (epoch, batch index) and resuming replays it exactly.
  Each epoch gets a fresh DataLoader whose generator (and hence worker seeds) is seeded the same
  way.
- Device: CUDA when present (autocast bf16 if supported, else fp16 with a GradScaler), CPU otherwise
  with `cfg.cpu_threads` intra-op threads when set (1 is fastest for small models on a shared CPU).
- Model initialisation is the caller's: call `seed_everything(seed)` before building the model (the
  stages do); `fit` seeds again so the training stream does not depend on how much randomness
  building the model consumed.
- Checkpoint every `cfg.checkpoint_every` steps and at the end to out_dir/checkpoint.pt (model,
  optimizer, scheduler, scaler, RNG states, step, loader position, curve so far), written to a
  temp file and renamed. A later `fit` with the same out_dir resumes from it and reaches the same
  final weights as an uninterrupted run. A checkpoint that cannot be read raises
  `CheckpointError` (never a silent restart); one written for a different config/seed/run_key is
  discarded with a warning and training restarts from step 0.
- A NaN/inf loss raises `NonFiniteLossError` naming the step.
- Feedback: tqdm bar (loss, samples/s); per-step CSV curve (`curve_path`, DVC plots: step, loss,
  lr, samples_per_s, and loss_fn's extra floats); metrics JSON (`metrics_path`).
- `run_key`: anything else that identifies the run (`run_key(files, modules, params)`: a hash of the
  training data, the initial weights, the model code and the model's params); with cfg, seed and the
  model's parameter shapes it forms the checkpoint's fingerprint, so a checkpoint left by different
  inputs is discarded (logged), never resumed.
- `stop_after_steps` ends this call early after that many optimizer steps (checkpoint written):
  the in-process stand-in for a kill, used by tests and by time-sliced schedulers.

Returned dict: train/loss (mean of the last log window), train/steps, train/samples_per_s
(optimizer steps only, excludes checkpoint I/O), train/seconds, plus eval_fn's metrics.

Several processes (torchrun; `training.devices` > 1 makes a training stage launch itself, see
stages/_cli.py and refexp.distributed): `fit` joins the process group (nccl on CUDA, one GPU per
local rank; gloo on CPU) and
- keeps the global data order above: each global batch of `cfg.batch_size` is cut into one
  contiguous slice of batch_size / world size per rank, so the same seed and global batch see the
  same examples per step on any number of processes (a batch size that does not split is a
  ConfigError);
- wraps `loss_fn(model, batch)` in a module under DistributedDataParallel, so gradients are averaged
  over the ranks whatever methods of the model loss_fn calls, and loss_fn still gets the plain model;
  with per-example-mean losses the step equals a 1-process step on the global batch up to float
  rounding. BatchNorm becomes SyncBatchNorm on CUDA (statistics over the global batch); gloo ranks
  on CPU normalise over their own slice;
- the logged loss and extras are their means over the ranks (one all_reduce per step, which also
  makes a NaN on any rank stop every rank);
- rank 0 keeps the 1-process random stream; rank r > 0 draws dropout/augmentation from its own
  seeded stream; checkpoints store every rank's RNG state, so a killed run resumes exactly;
- rank 0 alone writes the checkpoint, curve and metrics and shows progress; eval_fn runs on every
  rank (same weights: buffers are taken from rank 0 at the end), so every rank returns the same dict.
With one process none of this runs: the loop is the 1-process loop above, bit for bit.
"""
from __future__ import annotations

import atexit
import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from refexp import distributed
from refexp.artifacts import save_torch
from refexp.config import ConfigError, TrainingConfig
from refexp.errors import CheckpointError, NonFiniteLossError  # noqa: F401  (re-exported)
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]]
EvalFn = Callable[[torch.nn.Module], Mapping[str, float]]




# ---------------------------------------------------------------- device / precision


def pick_device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # One GPU per torchrun rank on the machine.
    return torch.device("cuda", distributed.local_rank()) if distributed.world_size() > 1 else torch.device("cuda")


def autocast_dtype(cfg: TrainingConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: bf16 where supported, else fp16."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to the device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_size_of(batch: Any) -> int:
    """Leading dimension of the first tensor in a (nested) batch."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        n = batch_size_of(v)
        if n:
            return n
    return 0


# ---------------------------------------------------------------- data order


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of one epoch's seeded permutation, starting at batch `start` (for resume)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start: int = 0):
        self.n, self.batch_size, self.start = n, batch_size, start
        g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=g).tolist()
        # Drop the ragged tail so every step sees a full batch (unless the set is smaller).
        n_batches = max(1, n // batch_size)
        self.batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches[self.start:])

    def __len__(self) -> int:
        return len(self.batches) - self.start


class RankSlice(Sampler[list[int]]):
    """Rank `rank`'s contiguous slice of each global batch: DistributedSampler's role over the engine's own
    global order, so a run on several processes sees the same global batches as a run on one."""

    def __init__(self, batches: EpochBatchSampler, rank: int, world: int):
        self.global_batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches:
            share = len(batch) // self.world
            yield batch[self.rank * share:(self.rank + 1) * share]

    def __len__(self) -> int:
        return len(self.global_batches)


def check_split(n_examples: int, batch_size: int, world: int) -> None:
    """Every global batch must cut into `world` equal slices (unequal ones would weight ranks unequally)."""
    if batch_size % world:
        raise ConfigError(f"training.batch_size {batch_size} does not split over {world} processes: each takes "
                          f"batch_size / devices samples of every global batch; choose a multiple of {world}")
    if n_examples < batch_size and n_examples % world:
        raise ConfigError(f"the training set's {n_examples} examples (fewer than training.batch_size {batch_size}: "
                          f"one global batch of all of them) do not split over {world} processes")


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/python follow from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader(dataset: Dataset, cfg: TrainingConfig, seed: int, epoch: int, start: int,
            collate_fn: Callable | None, pin: bool, rank: int = 0, world: int = 1) -> tuple[DataLoader, int]:
    sampler = EpochBatchSampler(len(dataset), cfg.batch_size, seed, epoch, start)
    loader = DataLoader(
        dataset, batch_sampler=RankSlice(sampler, rank, world) if world > 1 else sampler, collate_fn=collate_fn,
        num_workers=cfg.num_workers, worker_init_fn=_worker_init if cfg.num_workers else None,
        generator=torch.Generator().manual_seed(_rank_seed(_epoch_seed(seed, epoch) + 1, rank)),
        pin_memory=pin, persistent_workers=False,
        # spawn, not fork: a forked worker inherits the parent's threads and exit handlers (Dask,
        # Prefect, tqdm) and can die at shutdown; spawned workers start clean.
        multiprocessing_context="spawn" if cfg.num_workers else None,
    )
    return loader, len(sampler.batches)


# ---------------------------------------------------------------- processes (torchrun)


def _rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps `seed` (the 1-process stream); rank r > 0 gets its own stream derived from it."""
    if rank == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:rank{rank}".encode()).digest()[:8], "big") % (2**63 - 1)


def _seed_rank_stream(seed: int, rank: int) -> None:
    """Rank r > 0's dropout and augmentation draws: not rank 0's, which would repeat them on other examples."""
    own = _rank_seed(seed, rank)
    random.seed(own)
    np.random.seed(own % 2**32)
    torch.manual_seed(own)


def join_process_group(device: torch.device) -> int:
    """Join torchrun's process group once per process (kept for every later `fit` of the stage, left at
    exit); return the world size, 1 when this process was not launched by torchrun."""
    if distributed.world_size() == 1:
        return 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_process_group)
    return dist.get_world_size()


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _LossOf(torch.nn.Module):
    """loss_fn(model, batch) as a module's forward: DistributedDataParallel then averages the gradients of
    whatever loss_fn computes (SCRC's calls model.log_likelihood, not forward; text_objseg's adds a weight
    decay term), and loss_fn keeps getting the plain model."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, float]]:
        return self.loss_fn(self.model, batch)


def _mean_over_ranks(loss: torch.Tensor, extras: Mapping[str, float], device: torch.device) -> tuple[float, dict]:
    """The step's loss and loss_fn's extras averaged over the ranks (what one process would log for the
    global batch, for per-example-mean losses); a NaN on any rank makes every rank's mean NaN."""
    keys = list(extras)
    values = torch.tensor([float(loss.detach()), *(float(extras[k]) for k in keys)], dtype=torch.float64,
                          device=device)
    dist.all_reduce(values)
    values = (values / dist.get_world_size()).tolist()
    return values[0], dict(zip(keys, values[1:]))


def _rank_rng_states() -> list[dict]:
    """Every rank's RNG state, gathered on rank 0 (the others get an empty list)."""
    gathered: list | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(_rng_state(), gathered, dst=0)
    return gathered or []


def _take_rank0_buffers(model: torch.nn.Module) -> None:
    """Buffers (BatchNorm running statistics) as rank 0 has them: the last step's updates are per rank."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


# ---------------------------------------------------------------- optimiser


def build_optimizer(model: torch.nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainingConfig) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            span = max(1, cfg.steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
        if cfg.schedule == "step":
            return cfg.step_gamma ** ((step - cfg.warmup_steps) // cfg.step_size)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ---------------------------------------------------------------- checkpoints


def run_key(files: Iterable[Path] = (), modules: Iterable[ModuleType] = (), params: Any = None) -> str:
    """sha256 of what a run depends on beyond its TrainingConfig: its input files' bytes, the source of
    the code that builds and trains the model (this engine's included) and the model's params. Passed
    as `fit(run_key=...)`, so a persisted checkpoint is discarded, never resumed, after any of them changed."""
    h = hashlib.sha256()
    for f in files:
        f = Path(f)
        h.update(f.name.encode())
        h.update(f.read_bytes() if f.exists() else b"<missing>")
    for module in {m.__name__: m for m in [*modules, sys.modules[__name__]]}.values():
        h.update(Path(module.__file__).read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _fingerprint(cfg: TrainingConfig, seed: int, model: torch.nn.Module, run_key: str) -> str:
    shapes = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    text = json.dumps([cfg.model_dump(), seed, shapes, run_key], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a killed save never leaves a truncated checkpoint.pt."""
    save_torch(payload, path)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with weights_only=True; any failure is a CheckpointError naming the file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/garbage files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}: {err}); "
            "delete it to restart training from scratch") from None
    required = {"model", "optimizer", "scheduler", "rng", "step", "epoch", "batch_in_epoch", "fingerprint", "curve"}
    if not isinstance(payload, dict) or not required <= set(payload):
        missing = sorted(required - set(payload)) if isinstance(payload, dict) else sorted(required)
        raise CheckpointError(f"checkpoint {path} lacks fields {missing}; delete it to restart")
    return payload


# ---------------------------------------------------------------- outputs


def _write_json(path: Path, data: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_curve(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields or ["step", "loss"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the loop


def fit(
    model: torch.nn.Module,
    train_dataset: Dataset,
    loss_fn: LossFn,
    cfg: TrainingConfig,
    out_dir: Path,
    *,
    seed: int,
    collate_fn: Callable | None = None,
    eval_fn: EvalFn | None = None,
    metrics_path: Path | None = None,
    curve_path: Path | None = None,
    deterministic: bool = True,
    stop_after_steps: int | None = None,
    progress: bool = True,
    run_key: str = "",
) -> dict:
    """Train `model` for cfg.steps optimizer steps (resuming from out_dir/checkpoint.pt)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(train_dataset) == 0:
        raise ValueError("training dataset is empty")
    seed_everything(seed, deterministic)
    device = pick_device()
    world = join_process_group(device)
    rank = dist.get_rank() if world > 1 else 0
    if cfg.devices > 1 and world == 1:
        log.warning("training.devices is %d but this process was not launched by torchrun (stages/_cli.py "
                    "launches the training stages): training on 1 process", cfg.devices)
    if world > 1:
        check_split(len(train_dataset), cfg.batch_size, world)
        if rank:
            _seed_rank_stream(seed, rank)
    if device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    model.to(device)
    if world > 1 and device.type == "cuda":
        # Batch statistics over the global batch, as on one device (convert swaps the modules in place).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    amp_dtype = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    fingerprint = _fingerprint(cfg, seed, model, run_key)

    step, epoch, batch_in_epoch, curve = 0, 0, 0, []
    # Throughput over all calls of this run (a resumed run reports the whole run's rate).
    timing = {"seconds": 0.0, "samples": 0}
    window: list[float] = []  # losses since the last log row (the curve averages them)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if state["fingerprint"] != fingerprint:
            # Discarded, not kept aside: the folder is a DVC output, and a stale copy would be cached with it.
            log.warning("%s was written for another config/seed/model (other data, params or code); "
                        "discarded, training from step 0", ckpt_path)
            if world > 1:
                dist.barrier()  # every rank has read it before rank 0 removes it
            if rank == 0:
                ckpt_path.unlink()
        else:
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if "scaler" in state:
                    scaler.load_state_dict(state["scaler"])
            except (RuntimeError, KeyError, ValueError) as err:
                raise CheckpointError(f"checkpoint {ckpt_path} does not fit this model: {err}") from None
            if world == 1:
                _set_rng_state(state["rng"])
            elif len(state.get("rank_rng", [])) == world:
                _set_rng_state(state["rank_rng"][rank])
            elif rank == 0:  # written by another number of processes: rank 0's stream is the 1-process one
                _set_rng_state(state["rng"])
            else:
                _seed_rank_stream(_rank_seed(seed, state["step"] + 1), rank)
            step, epoch, batch_in_epoch, curve = state["step"], state["epoch"], state["batch_in_epoch"], list(state["curve"])
            timing = dict(state.get("timing", timing))
            window = list(state.get("window", []))
            log.info("resuming from %s at step %d (epoch %d, batch %d)", ckpt_path, step, epoch, batch_in_epoch)

    def checkpoint() -> None:
        payload = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "fingerprint": fingerprint, "curve": curve, "window": window,
            "timing": {"seconds": timing["seconds"] + train_seconds, "samples": timing["samples"] + samples},
        }
        if world > 1:
            payload["rank_rng"] = _rank_rng_states()  # a collective: every rank checkpoints at the same steps
        if rank == 0:
            save_checkpoint(ckpt_path, payload)

    def compute(batch: Any) -> tuple[torch.Tensor, Mapping[str, float]]:  # one process: the model itself
        return loss_fn(model, batch)

    if world > 1:  # through DDP, which averages the gradients over the ranks
        compute = torch.nn.parallel.DistributedDataParallel(  # type: ignore[assignment]
            _LossOf(model, loss_fn), device_ids=[device.index] if device.type == "cuda" else None,
            # a model may hold parameters its loss never uses: their grads stay None, as on 1 process
            find_unused_parameters=True)

    train_seconds, samples = 0.0, 0
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or rank != 0, desc=f"train {out_dir.name}",
               dynamic_ncols=True, leave=False)
    steps_this_call = 0
    stopped_early = False
    while step < cfg.steps and not stopped_early:
        loader, n_batches = _loader(train_dataset, cfg, seed, epoch, batch_in_epoch, collate_fn,
                                    pin=device.type == "cuda", rank=rank, world=world)
        tick = time.perf_counter()
        for batch in loader:
            batch = to_device(batch, device)
            n = batch_size_of(batch) * world
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                loss, extras = compute(batch)
            if world > 1:
                mean_loss, extras = _mean_over_ranks(loss, extras, device)
            if not (torch.isfinite(loss.detach()).all() if world == 1 else math.isfinite(mean_loss)):
                raise NonFiniteLossError(
                    f"loss is {loss.item() if world == 1 else mean_loss} at step {step + 1} (epoch {epoch}, "
                    f"batch {batch_in_epoch}); try a lower lr than {cfg.lr} or check the inputs")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            steps_this_call += 1
            samples += n
            loss_value = float(loss.detach()) if world == 1 else mean_loss
            window = (window + [loss_value])[-cfg.log_every:]
            now = time.perf_counter()
            train_seconds += now - tick
            rate = samples / train_seconds if train_seconds else 0.0
            if step % cfg.log_every == 0 or step == cfg.steps:
                curve.append({"step": step, "loss": sum(window) / len(window),
                              "lr": scheduler.get_last_lr()[0], "samples_per_s": round(rate, 2),
                              **{k: float(v) for k, v in extras.items()}})
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}", samples_s=f"{rate:.0f}")
            bar.update(1)
            if batch_in_epoch >= n_batches:
                epoch, batch_in_epoch = epoch + 1, 0
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint()
            if step >= cfg.steps:
                break
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                if step % cfg.checkpoint_every:
                    checkpoint()
                stopped_early = True
                break
            tick = time.perf_counter()
    bar.close()
    if world > 1:
        _take_rank0_buffers(model)

    total_seconds, total_samples = timing["seconds"] + train_seconds, timing["samples"] + samples
    metrics: dict[str, Any] = {
        "train/loss": curve[-1]["loss"] if curve else (sum(window) / len(window) if window else float("nan")),
        "train/steps": step,
        "train/samples_per_s": total_samples / total_seconds if total_seconds else 0.0,
        "train/seconds": total_seconds,
    }
    if stopped_early:
        metrics["train/stopped_early"] = True
        return metrics
    if eval_fn is not None:
        model.eval()
        with torch.no_grad():
            metrics.update(eval_fn(model))
        model.train()
    if curve_path is not None and rank == 0:
        write_curve(Path(curve_path), curve)
    if metrics_path is not None and rank == 0:
        _write_json(Path(metrics_path), metrics)
    return metrics
