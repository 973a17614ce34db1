"""Wall time of the two long commands, each against a baseline measured in the same run.

    python -m benchmarks.pipeline make-run     # the embedded `make run`'s job, in a fresh clone
    python -m benchmarks.pipeline make-run --one-at-a-time   # and plain `dvc repro` in a second clone (+~30 min)
    python -m benchmarks.pipeline seed-study   # `make seed-study`'s study, from empty models/seed_study

make-run: clones HEAD into a temporary directory and runs `make run`'s job there (`python -m flows.repro`:
`dvc repro` with `flows.jobs` stages side by side) with this checkout's .venv (the budget excludes the
install), under /usr/bin/time -v: wall time, peak RSS, stages run, the slowest stages. Baselines in the same
run: a plain `dvc repro` right after, which has nothing to do (DVC's fixed cost), and with --one-at-a-time a
plain `dvc repro` (one stage at a time) in a second fresh clone. Then every metrics file each fresh run wrote is compared
with the committed one on its non-timing values. Replaces the `## The embedded make run` section of
reports/benchmarks.md.

seed-study: runs the seed-study stage with the params' seed_study.workers from an empty models/seed_study/
(moved aside and restored), then again (the baseline: every run resumes from its finished checkpoint, so it
measures evaluation and data loading alone). Replaces the `## The training-seed study` section.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import write_section
from refexp.reporting.provenance import git_revision

REPO = Path(__file__).resolve().parents[1]
TIMING_KEY = re.compile(r"seconds|per_s|ms_per|_ms$|/ms|wall|timing|time_|_s$")


def _env(root: Path) -> dict:
    venv_bin = REPO / ".venv" / "bin"
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'src'}",
            "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def _timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, output) of cmd under /usr/bin/time -v."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=_env(cwd), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, int(rss.group(1)) / 1024 if rss else float("nan"), proc.stdout + proc.stderr


def _non_timing(values: dict) -> dict:
    return {k: v for k, v in values.items() if not TIMING_KEY.search(k)}


def _compare_metrics(clone: Path) -> tuple[int, list[str]]:
    """(files compared, files whose non-timing values differ from the committed ones)."""
    compared, differing = 0, []
    for path in sorted((clone / "reports" / "metrics").rglob("*.json")):
        rel = path.relative_to(clone)
        committed = subprocess.run(["git", "show", f"HEAD:{rel.as_posix()}"], cwd=REPO, capture_output=True, text=True)
        if committed.returncode != 0:
            continue
        compared += 1
        if _non_timing(json.loads(committed.stdout)) != _non_timing(json.loads(path.read_text())):
            differing.append(rel.as_posix())
    return compared, differing


def _slowest(out: str, n: int = 8) -> list[tuple[float, str]]:
    """flows.repro's closing list of (seconds, stage), slowest first."""
    rows = [(float(m.group(1)), m.group(2)) for m in re.finditer(r"^\s*([\d.]+) s  (\S+)$", out, re.M)]
    return sorted(rows, reverse=True)[:n]


def make_run(one_at_a_time: bool = False) -> str:
    from refexp.config import load_config

    stamp, rev = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), git_revision(REPO)
    jobs = load_config(REPO / "params.yaml").flows.jobs
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="refexp-make-run-") as tmp:
        clone, serial = Path(tmp) / "repo", Path(tmp) / "serial"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        wall, rss, out = _timed([sys.executable, "-m", "flows.repro"], clone)
        ran = len(re.findall(r"\] Running stage '", out))
        slowest = _slowest(out)
        again, _, again_out = _timed([sys.executable, "-m", "dvc", "repro"], clone)
        again_ran = len(re.findall(r"Running stage '", again_out))
        compared, differing = _compare_metrics(clone)
        if one_at_a_time:
            subprocess.run(["git", "clone", "-q", str(REPO), str(serial)], check=True)
            one_wall, one_rss, one_out = _timed([sys.executable, "-m", "dvc", "repro"], serial)
            one_ran = len(re.findall(r"Running stage '", one_out))
            one_compared, one_differing = _compare_metrics(serial)

    def agreement(n: int, differ: list[str]) -> str:
        return "all identical." if not differ else f"{len(differ)} differ ({', '.join(differ[:6])})."

    lines = ["## The embedded make run", "",
             f"`python -m benchmarks.pipeline make-run` — run {stamp}, git {rev[:7]}, load average {load:.1f} at the "
             "start (2 cores). `make run`'s job (`python -m flows.repro`: `dvc repro` with the stages the DAG leaves "
             f"independent side by side, `flows.jobs: {jobs}`) in a fresh clone of HEAD with this checkout's .venv "
             "(the budget excludes the install), under `/usr/bin/time -v`; the baselines in the same run.", "",
             "| run | wall | peak RSS (MB) | stages run |", "|---|---|---|---|",
             f"| `make run`'s job from an empty `data/` and `models/` | **{wall / 60:.1f} min** ({wall:.0f} s) | {rss:.0f} "
             f"| {ran} |",
             f"| baseline: plain `dvc repro` afterwards (nothing to do) | {again:.1f} s | – | {again_ran} |",
             *([f"| baseline: plain `dvc repro` (one stage at a time) from an empty `data/` and `models/`, second "
                f"clone | {one_wall / 60:.1f} min ({one_wall:.0f} s) | {one_rss:.0f} | {one_ran} |"] if one_at_a_time
               else []), "",
             f"- Budget: 20 minutes for all five papers on 2 cores; this run: {wall / 60:.1f} min"
             + (f" ({one_wall / wall:.2f}x faster than one stage at a time)." if one_at_a_time else
                " (`--one-at-a-time` adds the plain `dvc repro` baseline; not run this time)."),
             "- Peak RSS is the largest single process's (the stages run in their own processes).",
             f"- Non-timing values of the {compared} metrics files `make run`'s job wrote, against the committed ones: "
             + agreement(compared, differing),
             *([f"- The same for the {one_compared} files of the one-at-a-time run: "
                + agreement(one_compared, one_differing)] if one_at_a_time else []),
             "- Slowest stages of `make run`'s job (wall, with a second stage beside it most of the time): "
             + ", ".join(f"`{stage}` {sec:.0f} s" for sec, stage in slowest) + ".", ""]
    return "\n".join(lines)


def seed_study() -> str:
    from refexp.config import load_config

    cfg = load_config(REPO / "params.yaml")
    stamp, rev = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), git_revision(REPO)
    study = REPO / cfg.paths.models / "seed_study"
    aside = study.with_name("seed_study.benchmark-aside")
    if study.exists():
        shutil.rmtree(aside, ignore_errors=True)
        study.rename(aside)
    try:
        cold, rss, _ = _timed([sys.executable, "-m", "stages.seed_study"], REPO)
        warm, _, _ = _timed([sys.executable, "-m", "stages.seed_study"], REPO)
    except BaseException:
        shutil.rmtree(study, ignore_errors=True)
        if aside.exists():
            aside.rename(study)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    s = cfg.seed_study
    n_runs = sum(len(getattr(cfg, m).variants) for m in s.models) * len(s.seeds)
    lines = ["## The training-seed study", "",
             f"`python -m benchmarks.pipeline seed-study` — run {stamp}, git {rev[:7]}. `make seed-study`'s study "
             f"({len(s.seeds)} seeds x the variants of {', '.join(s.models)} = {n_runs} trainings and evaluations, "
             f"plus each seed's caption pretraining) from an empty `models/seed_study/`, "
             f"`seed_study.workers: {s.workers}`, under `/usr/bin/time -v`.", "",
             "| run | wall | peak RSS (MB) |", "|---|---|---|",
             f"| from scratch | **{cold / 60:.1f} min** | {rss:.0f} |",
             f"| baseline: the same command again (every run resumes finished: evaluation and data loading only) | "
             f"{warm / 60:.1f} min | – |", ""]
    return "\n".join(lines)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    jobs = {"make-run": ("## The embedded make run", make_run), "seed-study": ("## The training-seed study", seed_study)}
    if which not in jobs:
        sys.exit(f"usage: python -m benchmarks.pipeline {{{'|'.join(jobs)}}}")
    heading, job = jobs[which]
    text = job(one_at_a_time=True) if which == "make-run" and "--one-at-a-time" in sys.argv[2:] else job()
    print(text)
    write_section(heading, text)


if __name__ == "__main__":
    main()
