"""What every report records: the git revision and the params it was made with."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from refexp.config import Config


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


def report_header(cfg: Config, title: str, sections: tuple[str, ...] = (), root: str | Path = ".") -> str:
    """Markdown header: title, git revision, seed, and the params sections the report depends on."""
    lines = [f"# {title}", "", f"- git revision: `{git_revision(root)}`", f"- seed: `{cfg.run.seed}`"]
    if sections:
        dumped = cfg.model_dump(include=set(sections))
        lines += ["", "<details><summary>params</summary>", "", "```yaml",
                  yaml.safe_dump(dumped, sort_keys=True).rstrip(), "```", "", "</details>"]
    return "\n".join(lines) + "\n"
