"""`make run`'s job: `dvc repro`, with independent stages running side by side.

    python -m flows.repro                          # every stage that needs running (what `dvc repro` would run)
    python -m flows.repro --targets report_scrc    # a target and its dependencies
    python -m flows.repro --force --targets train_grn@grn
    python -m flows.repro --jobs 1                 # one stage at a time (params: flows.jobs)

What runs is what `dvc repro` would run: the stages `dvc status` reports changed and everything
downstream of them. Each runs as `dvc repro --single-item <stage>` once the stages it depends on are
done, up to `flows.jobs` at a time (flows.dag.run_stages), so dvc.lock is the record and a plain
`dvc repro` afterwards runs nothing. On a CUDA machine the GPU stages (`flows.gpu_stages`) also keep
to `flows.gpu_concurrency` at a time. Each output line carries its stage's name; the end lists each
stage's wall time. No Prefect here: the Prefect flow (flows.pipeline) runs the same plan with retries.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from flows.dag import REPO_ROOT, StageFailed, flows_config, run_stages, stage_plan, stages_to_run


def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.repro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", metavar="STAGE", help="stages (or stage@item) to run, with their dependencies")
    parser.add_argument("--force", action="store_true", help="run the selected stages even if up to date")
    parser.add_argument("--jobs", type=int, help="stages at once (default: params flows.jobs)")
    parser.add_argument("--repo", default=str(REPO_ROOT), help="repository with dvc.yaml and params.yaml")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    cfg = flows_config(repo)
    jobs = args.jobs or cfg.jobs
    if jobs < 1:
        parser.error("--jobs must be at least 1")
    start = time.monotonic()
    plan = stage_plan(repo, args.targets)
    todo = stages_to_run(repo, plan, force=args.force)
    print(f"{len(todo)} of {len(plan.order)} stage(s) to run, {jobs} at a time", flush=True)

    def echo(stage: str, line: str) -> None:
        print(f"[{stage}] {line}", flush=True)

    try:
        runs = run_stages(repo, plan, todo, jobs=jobs, force=args.force, on_line=echo,
                          limited=cfg.uses_gpu, limit=cfg.gpu_concurrency if cuda_present() else None)
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the running stages were stopped", file=sys.stderr)
        return 130
    for run in sorted(runs, key=lambda r: -r.seconds):
        print(f"{run.seconds:8.1f} s  {run.stage}")
    busy = sum(r.seconds for r in runs)
    print(f"{len(runs)} stage(s) in {time.monotonic() - start:.1f} s wall ({busy:.1f} s of stage time)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
