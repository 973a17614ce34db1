"""reports/index.md: every report with its title, and the headline test metrics of every evaluated item."""
from __future__ import annotations

import json
from pathlib import Path

from refexp.artifacts import write_text
from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.provenance import report_header


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


def build_index(cfg: Config, paths: Paths) -> dict:
    keys = cfg.report_index.headline_keys
    reports = sorted(p for p in paths.reports.glob("*.md") if p.name != "index.md")
    lines = [report_header(cfg, "refexp reports", ("report_index",), paths.root), "## Reports", ""]
    lines += [f"- [{_title(p)}]({p.name})" for p in reports]
    rows = headline_rows(paths.reports / "metrics", keys)
    used = [k for k in keys if any(k in found for _, _, found in rows)]
    lines += ["", "## Headline test metrics", "",
              "Every stage's full metrics are in `metrics/<stage>/<item>.json` (`dvc metrics show`).", "",
              "| stage | item | " + " | ".join(f"`{k}`" for k in used) + " |",
              "|---|---|" + "---|" * len(used)]
    for stage, item, found in rows:
        lines.append(f"| {stage} | {item} | " + " | ".join(_format(found[k]) if k in found else "–"
                                                           for k in used) + " |")
    write_text(paths.report("index"), "\n".join(lines) + "\n")
    return {"reports": len(reports), "metric_rows": len(rows)}
