"""The refexp pipeline as a Prefect flow: one task per dvc.yaml stage, run through DVC.

    python -m flows.pipeline                      # every stage, like `dvc repro`
    python -m flows.pipeline --targets prepare_referit@referit --force
    python -m flows.pipeline --list               # the stage order, retry policies and tags, no run

The stages, their order and their upstream stages come from DVC (flows.dag.stage_plan); the
flow runs what `dvc repro` would run (the stages `dvc status` reports changed and everything
downstream; all of them with --force), each task `dvc repro --single-item <stage>`, so dvc.lock
stays the record. A stage starts once the stages it depends on are done, up to `flows.jobs` at a
time (DVC holds its repository lock only to load and commit, not while a stage's command runs;
flows.dag). Retries and delays per stage come from params.yaml `flows` (e.g. downloads retry with
growing delays; training retries once and resumes from its checkpoint). After a stage fails for
good no new stage starts; the running ones finish, and the flow fails with that stage's error.

Training stages (`flows.gpu_stages`) carry the Prefect tag `flows.gpu_tag`; `make ui` gives
that tag a concurrency limit of `flows.gpu_concurrency` (flows.serve.ensure_gpu_limit), so
flow runs of several clones or worktrees orchestrated by one Prefect server share the GPU
one training stage at a time. Other stages carry no tag and are not limited.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import task_run

from flows.dag import REPO_ROOT, clear_for_retrain, flows_config, run_dvc_stage, stage_order, stage_plan, stages_to_run
from refexp.config import FlowsConfig


@task(cache_policy=NO_CACHE, persist_result=False)
def dvc_stage(repo: str, stage: str, force: bool = False) -> dict:
    """Run one DVC stage; the task's name and retries are set per stage by `pipeline`."""
    logger = get_run_logger()
    attempt = task_run.run_count
    logger.info("dvc repro --single-item %s%s (attempt %d)", stage, " --force" if force else "", attempt)
    start = time.monotonic()
    if force and attempt == 1:
        # Forced means trained again: drop the checkpoint once; a retry then resumes this run's own.
        for path in clear_for_retrain(repo, [stage]):
            logger.info("forced: removed %s", path)
    run_dvc_stage(repo, stage, force=force, on_line=logger.info)
    return {"stage": stage, "attempts": attempt, "seconds": round(time.monotonic() - start, 3)}


def stage_task_options(cfg: FlowsConfig, stage: str) -> dict:
    """The task options of one stage: its name, its retries and delays, and the GPU tag for a training stage."""
    retry = cfg.retry_for(stage)
    return {
        "name": stage,
        "task_run_name": stage,
        "retries": retry.retries,
        "retry_delay_seconds": retry.delays() or 0,
        "tags": cfg.tags_for(stage),
    }


@flow(name="refexp-pipeline", log_prints=False)
def pipeline(targets: list[str] | None = None, force: bool = False, repo: str = str(REPO_ROOT)) -> list[dict]:
    """Run the DVC stages that need running (all, or `targets` and their dependencies), each once its upstream
    stages are done, `flows.jobs` at a time; returns one row per stage run, in topological order."""
    logger = get_run_logger()
    cfg = flows_config(repo)
    plan = stage_plan(repo, targets)
    chosen = stages_to_run(repo, plan, force=force)
    logger.info("%d of %d stage(s) to run, %d at a time: %s", len(chosen), len(plan.order), cfg.jobs, ", ".join(chosen))
    done = set(plan.order) - set(chosen)
    todo = [stage for stage in plan.launch_order() if stage not in done]  # longest chains first
    running: dict[PrefectFuture, str] = {}
    results: dict[str, dict] = {}
    failed: PrefectFuture | None = None
    while todo or running:
        if failed is None:
            for stage in plan.startable(todo, done, running.values(), cfg.jobs):
                todo.remove(stage)
                running[dvc_stage.with_options(**stage_task_options(cfg, stage)).submit(repo, stage, force)] = stage
        if not running:
            break
        future = next(as_completed(list(running)))
        stage = running.pop(future)
        try:
            results[stage] = future.result()  # a failed stage (after its retries) raises here
        except Exception:
            failed = failed or future
            continue
        done.add(stage)
    if failed is not None:
        failed.result()  # raises the stage's StageFailed, after its retries
    return [results[stage] for stage in plan.order if stage in results]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", metavar="STAGE", help="stages (or stage@item) to run, with their dependencies")
    parser.add_argument("--force", action="store_true", help="re-run the selected stages even if up to date")
    parser.add_argument("--repo", default=str(REPO_ROOT), help="repository with dvc.yaml and params.yaml")
    parser.add_argument("--list", action="store_true", help="print the stage order, retry policies and tags, run nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    repo = str(Path(args.repo).resolve())
    if args.list:
        cfg = flows_config(repo)
        for stage in stage_order(repo, args.targets):
            retry = cfg.retry_for(stage)
            delays = ", ".join(f"{d:g}s" for d in retry.delays()) or "-"
            tags = ",".join(cfg.tags_for(stage)) or "-"
            print(f"{stage}\tretries={retry.retries}\tdelays={delays}\ttags={tags}")
        return 0
    state = pipeline(targets=args.targets, force=args.force, repo=repo, return_state=True)
    if not state.is_completed():
        print(f"flow run {state.name}: {state.message}", file=sys.stderr)
        return 1
    for row in state.result():
        print(f"{row['stage']}\tattempts={row['attempts']}\t{row['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
