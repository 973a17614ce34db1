"""What every report records, in a reader's order.

- `run_summary(cfg, datasets, models)`: the report's opening "What this ran on": each dataset's source
  (synthetic, a local copy, or the official download) and format, and each model's backbone, its
  weights and the image size, so no number is read without knowing whether it is the embedded world.
- `provenance(cfg, sections)`: the closing section: git revision, seed, and the params sections the
  report depends on, collapsed.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from refexp.config import Config

SOURCE_TEXT = {"synthetic": "synthetic: the embedded world, generated in the dataset's own format",
               "local": "local copy of {root}", "official": "official download (refexp.data.manifest)"}


def git_revision(root: str | Path = ".") -> str:
    """HEAD's commit, with '+dirty' when tracked sources or params differ from it; 'unknown' outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        # Generated outputs (reports/, dvc.lock) do not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)reports", ":(exclude)dvc.lock"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


@dataclass(frozen=True)
class ModelInput:
    """One model's image side, as a report states it."""

    name: str
    backbone: str | None  # None: the model reads no pixels
    pretrained: bool = False
    image_size: str = ""
    detail: str = ""  # e.g. "frozen", "crops 16 px"


def weights_text(backbone: str | None, pretrained: bool) -> str:
    if backbone is None:
        return "none (no image input)"
    if not pretrained:
        return "random initialisation"
    if backbone == "tiny":
        return ("pretrain_backbone checkpoint (models/backbone/tiny: per-pixel category and colour on the COCO "
                "train2014 images; reports/backbone.md), in ImageNet's role")
    return "ImageNet (torchvision IMAGENET1K_V1)"


def dataset_text(cfg: Config, name: str) -> str:
    d = cfg.dataset(name)
    source = SOURCE_TEXT[d.source].format(root=f"`{d.root}`")
    return f"`{name}` ({d.format} format): {source}"


def run_summary(cfg: Config, datasets: list[str], models: list[ModelInput]) -> list[str]:
    """Markdown lines of the opening section."""
    real = [n for n in dict.fromkeys(datasets) if cfg.dataset(n).source != "synthetic"]
    kind = ("real data" if len(real) == len(set(datasets)) else
            "synthetic data (the embedded world)" if not real else "synthetic and real data")
    lines = ["## What this ran on", "", f"**{kind}**", ""]
    lines += [f"- Data: {dataset_text(cfg, n)}" for n in dict.fromkeys(datasets)]
    for m in models:
        if m.backbone is None:
            lines.append(f"- {m.name}: no image input")
            continue
        extra = f"; {m.detail}" if m.detail else ""
        lines.append(f"- {m.name}: backbone `{m.backbone}`, weights: {weights_text(m.backbone, m.pretrained)}; "
                     f"images {m.image_size}{extra}")
    return lines + [""]


def data_kind(cfg: Config, datasets: list[str]) -> str:
    """'embedded' when every dataset is synthetic, else 'real'."""
    return "embedded" if all(cfg.dataset(n).source == "synthetic" for n in datasets) else "real"


def provenance(cfg: Config, sections: tuple[str, ...] = (), root: str | Path = ".") -> list[str]:
    """Markdown lines of the closing section: git revision, seed and the params, collapsed."""
    lines = ["## Provenance", "", f"- git revision: `{git_revision(root)}`", f"- seed: `{cfg.run.seed}`"]
    if sections:
        dumped = cfg.model_dump(include=set(sections))
        lines += ["", "<details><summary>params</summary>", "", "```yaml",
                  yaml.safe_dump(dumped, sort_keys=True).rstrip(), "```", "", "</details>"]
    return lines + [""]


NUMERICS_FILE = "numerics.json"  # reports/metrics/numerics.json, written by benchmarks/numerics.py


def numerics_lines(reports_root: Path, model: str) -> list[str]:
    """How far this model's numbers move with the CPU kernel path (a stand-in for another machine), from
    the numerics benchmark's measurements; the pinned path is refexp.numerics."""
    import json

    from refexp.numerics import CPU_NUMERICS

    pinned = ", ".join(f"{k}={v}" for k, v in CPU_NUMERICS.items())
    lines = ["## Numbers across machines", "",
             f"Every stage pins the CPU kernel path ({pinned}; refexp.numerics) and training.cpu_threads fixes "
             "the intra-op threads (torch's default would be the machine's core count), so any x86 machine with "
             "AVX2 computes what this one did."]
    path = Path(reports_root) / "metrics" / NUMERICS_FILE
    record = json.loads(path.read_text()).get(model) if path.exists() else None
    if not record:
        return lines + ["How far the numbers move on another kernel path has not been measured for this model "
                        "(`python -m benchmarks.numerics`).", ""]
    rows = [f"| {alt} | {', '.join(f'{k}={v}' for k, v in r['settings'].items())} | "
            + " | ".join(f"{100 * r['scores'][v] - 100 * record['pinned'][v]:+.2f}" for v in record["variants"]) + " |"
            for alt, r in record["alternatives"].items()]
    lines += [f"Measured with {record['command']} ({record['date']}): the same training and evaluation on "
              "the other kernel paths this machine can take, against the pinned one; differences in points.", "",
              "| kernel path | settings | " + " | ".join(f"`{v}`" for v in record["variants"]) + " |",
              "|---|---|" + "---|" * len(record["variants"]),
              "| pinned | " + pinned + " | " + " | ".join(f"{100 * record['pinned'][v]:.2f}%" for v in record["variants"]) + " |",
              *rows, "",
              f"Largest move: {record['max_abs_points']:.2f} points. Unpinned, a machine of another instruction set "
              "moves this much; the seed study's spread over training seeds (seed_study.md) is the error bar to read "
              "these numbers with.", ""]
    return lines
