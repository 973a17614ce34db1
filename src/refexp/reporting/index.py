"""reports/index.md: every report with its title, and the headline test metrics of every evaluated item,
the embedded world's rows apart from the real data's (a number is never read without knowing which)."""
from __future__ import annotations

import json
from pathlib import Path

from refexp.artifacts import write_text
from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.provenance import dataset_text, provenance


def _title(report: Path) -> str:
    for line in report.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return report.stem


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2%}" if 0.0 <= value <= 1.0 else f"{value:.3g}"
    return str(value)


def headline_rows(metrics_root: Path, keys: list[str]) -> list[tuple[str, str, dict]]:
    """(stage, item, {key: value}) for every metrics file that has at least one headline key."""
    rows = []
    for path in sorted(metrics_root.glob("*/*.json")):
        values = json.loads(path.read_text())
        found = {k: values[k] for k in keys if k in values}
        if found:
            rows.append((path.parent.name, path.stem, found))
    for path in sorted(metrics_root.glob("*.json")):  # experiment-level files, e.g. referit_image_free.json
        values = json.loads(path.read_text())
        found = {k: values[k] for k in keys if k in values}
        if found:
            rows.append(("experiment", path.stem, found))
    return rows


def row_datasets(cfg: Config, stage: str, item: str) -> list[str]:
    """The datasets a headline row's numbers come from (empty when the row's stage is unknown)."""
    by_stage = {"evaluate_scrc": [cfg.scrc.dataset], "train_scrc": [cfg.scrc.dataset],
                "pretrain_scrc": [cfg.scrc.caption_dataset],
                "evaluate_attention_regression": [cfg.attention_regression.dataset],
                "train_attention_regression": [cfg.attention_regression.dataset],
                "pretrain_backbone": [cfg.pretrain_backbone.dataset],
                "evaluate_text_objseg": [cfg.text_objseg.dataset],
                "evaluate_text_objseg_baseline": [cfg.text_objseg.dataset],
                "train_text_objseg_lowres": [cfg.text_objseg.dataset],
                "train_text_objseg_highres": [cfg.text_objseg.dataset],
                "train_text_objseg_baseline": [cfg.text_objseg.dataset],
                "propose_masks": [cfg.text_objseg.dataset],
                **{stage: [cfg.grn.dataset] for stage in ("train_region_proposals", "extract_region_features",
                                                          "train_grn", "evaluate_grn")}}
    if stage == "experiment":
        from refexp.training.seed_study import study_datasets

        return {"referit_image_free": [cfg.referit_image_free.dataset],
                "seed_study": list(study_datasets(cfg))}.get(item, [])
    vto = cfg.vision_text_only
    if stage in ("train_vision_text_only_lowres", "train_vision_text_only_highres", "evaluate_vision_text_only"):
        if item in vto.variants:
            return [vto.variants[item].dataset]
        fused = item.rsplit("_", 1)[0]  # <dataset>_category, <dataset>_full
        return [fused] if fused in vto.full else []
    if stage in ("train_expression_classifier", "train_vision_text_only_full"):
        return [item] if item in vto.full else []
    if stage == "train_category_fcn":
        return [vto.synthesized_dataset]
    return by_stage.get(stage, [item] if item in cfg.datasets else [])


def build_index(cfg: Config, paths: Paths) -> dict:
    keys = cfg.report_index.headline_keys
    reports = sorted(p for p in paths.reports.glob("*.md") if p.name != "index.md")
    lines = ["# refexp reports", "", "## Reports", ""]
    lines += [f"- [{_title(p)}]({p.name})" for p in reports]
    rows = headline_rows(paths.reports / "metrics", keys)
    groups: dict[str, list] = {"embedded": [], "real": [], "unknown": []}
    for stage, item, found in rows:
        names = [n for n in row_datasets(cfg, stage, item) if n in cfg.datasets]
        kind = ("unknown" if not names else
                "embedded" if all(cfg.dataset(n).source == "synthetic" for n in names) else "real")
        groups[kind].append((stage, item, found, names))
    titles = {"embedded": "Embedded world (synthetic data, `make run`)",
              "real": "Real data", "unknown": "Other (no dataset recorded)"}
    lines += ["", "## Headline test metrics", "",
              "Every stage's full metrics are in `metrics/<stage>/<item>.json` (`dvc metrics show`).", ""]
    for kind, members in groups.items():
        if not members:
            continue
        used = [k for k in keys if any(k in found for _, _, found, _ in members)]
        datasets = sorted({n for *_, names in members for n in names})
        lines += [f"### {titles[kind]}", "", *[f"- {dataset_text(cfg, n)}" for n in datasets], "",
                  "| stage | item | " + " | ".join(f"`{k}`" for k in used) + " |", "|---|---|" + "---|" * len(used)]
        for stage, item, found, _ in members:
            lines.append(f"| {stage} | {item} | " + " | ".join(_format(found[k]) if k in found else "–"
                                                               for k in used) + " |")
        lines.append("")
    lines += provenance(cfg, ("report_index",), paths.root)
    write_text(paths.report("index"), "\n".join(lines) + "\n")
    return {"reports": len(reports), "metric_rows": len(rows), **{f"rows/{k}": len(v) for k, v in groups.items()}}
