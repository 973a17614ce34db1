"""How far the numbers move with the CPU kernel path: a stand-in for running on another machine.

    python -m benchmarks.numerics

The pipeline pins ATen, MKL and oneDNN to AVX2 (refexp.numerics). This script trains and evaluates
`scrc_full` (after its caption pretraining) and `attention_full`, with the embedded default's params and
the prepared data (run `dvc repro evaluate_scrc@scrc_full` first), once on the pinned path (the baseline,
in the same run) and once per alternative path that this machine can take: ATen's scalar kernels, MKL's
"COMPATIBLE" branch, oneDNN capped at SSE4.1, and 2 intra-op threads instead of 1. Each run is a fresh
process (the settings are read when the libraries start) in its own models directory. An AVX-512 machine
without the pin would take yet another path; these show the size of such moves.

Writes reports/metrics/numerics.json (read by the model reports' "Numbers across machines" section) and
the `## Numerics` section of reports/benchmarks.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import write_section
from refexp.numerics import CPU_NUMERICS

SECTION = "## Numerics"
ALTERNATIVES = {
    "ATen scalar kernels": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL compatible branch": {"MKL_CBWR": "COMPATIBLE"},
    "oneDNN up to SSE4.1": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "2 intra-op threads": {"REFEXP_BENCH_THREADS": "2"},
}
MODELS = {"scrc": ["scrc_full"], "attention_regression": ["attention_full"]}


def _worker(models_dir: str, out: str) -> None:
    """Train and evaluate the two variants into `models_dir`; write {model: {variant: score}} to `out`."""
    import shutil

    import torch

    from refexp.config import load_config
    from refexp.numerics import numerics_record
    from refexp.paths import Paths
    from refexp.training import scrc
    from refexp.training.attention_regression import evaluate_variant, train_variant

    cfg = load_config()
    threads = int(os.environ.get("REFEXP_BENCH_THREADS", cfg.training.cpu_threads or 1))
    torch.set_num_threads(threads)
    training = cfg.training.model_copy(update={"cpu_threads": threads})
    cfg = cfg.model_copy(update={"training": training})
    base = Paths.from_config(cfg)
    paths = dataclasses.replace(base, models=Path(models_dir), backbones=base.backbones)
    shutil.rmtree(paths.models, ignore_errors=True)
    scores: dict = {"scrc": {}, "attention_regression": {}}
    scrc.pretrain(cfg, paths, progress=False)
    for variant in MODELS["scrc"]:
        scrc.finetune(cfg, paths, variant, progress=False)
        scores["scrc"][variant] = scrc.evaluate(cfg, paths, variant)[0]["test/p_at_1"]
    section = cfg.attention_regression
    for variant in MODELS["attention_regression"]:
        train_variant(section, cfg.training.merged(section.training), variant, paths, seed=cfg.run.seed,
                      deterministic=cfg.run.deterministic)
        scores["attention_regression"][variant] = evaluate_variant(section, variant, paths, seed=cfg.run.seed)[0]["test/accuracy"]
    Path(out).write_text(json.dumps({"scores": scores, "record": numerics_record(), "threads": threads}))


def _run(settings: dict[str, str], models_dir: Path, out: Path) -> dict:
    env = {**os.environ, **CPU_NUMERICS, **settings}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.numerics", "--worker", str(models_dir), str(out)],
                   env=env, check=True)
    result = json.loads(out.read_text())
    result["seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    from refexp.reporting.provenance import NUMERICS_FILE, git_revision

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="refexp-numerics-") as tmp:
        runs = {"pinned": _run({}, Path(tmp) / "pinned", Path(tmp) / "pinned.json")}
        for name, settings in ALTERNATIVES.items():
            runs[name] = _run(settings, Path(tmp) / name.replace(" ", "_"), Path(tmp) / f"{name}.json")
    record: dict = {}
    for model, variants in MODELS.items():
        pinned = runs["pinned"]["scores"][model]
        alternatives = {name: {"settings": ALTERNATIVES[name], "scores": r["scores"][model],
                               "capability": r["record"]["torch_cpu_capability"]}
                        for name, r in runs.items() if name != "pinned"}
        moves = [abs(a["scores"][v] - pinned[v]) * 100 for a in alternatives.values() for v in variants]
        record[model] = {"variants": variants, "pinned": pinned, "alternatives": alternatives,
                         "max_abs_points": max(moves), "command": "`python -m benchmarks.numerics`",
                         "date": stamp, "git": git_revision()}
    metrics_path = Path("reports") / "metrics" / NUMERICS_FILE
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    header = "| kernel path | settings | torch capability | " + " | ".join(
        f"`{v}`" for vs in MODELS.values() for v in vs) + " | wall (s) |"
    lines = [SECTION, "",
             f"`python -m benchmarks.numerics` — run {stamp}, git {git_revision()[:7]}. `scrc_full` (P@1, after its "
             "caption pretraining) and `attention_full` (accuracy) trained and evaluated at the embedded default, "
             "each in a fresh process, on the pinned kernel path (baseline) and on each other path this machine can "
             "take. Differences in points against the pinned path.", "",
             header, "|---|---|---|" + "---|" * sum(map(len, MODELS.values())) + "---|"]
    for name, r in runs.items():
        settings = ", ".join(f"{k}={v}" for k, v in (CPU_NUMERICS if name == "pinned" else ALTERNATIVES[name]).items())
        cells = []
        for model, variants in MODELS.items():
            for v in variants:
                value, base = r["scores"][model][v], runs["pinned"]["scores"][model][v]
                cells.append(f"{100 * value:.2f}%" if name == "pinned" else f"{100 * (value - base):+.2f}")
        lines.append(f"| {name} | {settings} | {r['record']['torch_cpu_capability']} | " + " | ".join(cells)
                     + f" | {r['seconds']:.0f} |")
    worst = max(rec["max_abs_points"] for rec in record.values())
    lines += ["", f"- Largest move off the pinned path: **{worst:.2f} points**. Every stage pins the path "
              "(refexp.numerics), so an AVX2 or AVX-512 machine reproduces the pinned numbers; the seed study's "
              "spread (seed_study.md) is the error bar for everything else."]
    text = "\n".join(lines)
    print(text)
    write_section(SECTION, text)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        main()
