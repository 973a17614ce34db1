"""A temporary copy of the repository (sources and params only) in which real `dvc repro` runs happen:
the e2e test and the reliability suite's kill-and-resume tests share it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, TINY_OVERRIDES, deep_merge

# Extra shrinking for stages that train: the DAG must finish in a couple of minutes here.
E2E_OVERRIDES: dict = {
    # 160 VG images: enough mined sets that the GRN stages have test queries.
    "synthetic": {"n_images": 24, "vg_images": 160},
    "training": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 2},
    "pretrain_backbone": {"crop_size": 16, "training": {"steps": 3, "batch_size": 4}},
    "scrc": {"embed_dim": 8, "hidden": 16, "feature_dim": 8, "image_size": 64, "crop_size": 16, "n_proposals": 12,
             "figure_examples": 2, "pretrain_training": {"steps": 3}, "training": {"steps": 4}},
    "attention_regression": {"training": {"steps": 4, "batch_size": 8}, "figure_examples": 2},
    "build_region_benchmark": {"meteor_jvms": 1, "dask": {"local_workers": 1, "join_blocks": 2}},
    "text_objseg": {"input_size": 64, "model": {"embed_dim": 8, "text_hidden": 12, "classifier_hidden": 16,
                                                "feature_dim": 16},
                    "lowres_training": {"steps": 4}, "highres_training": {"steps": 4}, "eval_batch_size": 8,
                    "per_word": {"training": {"steps": 4}}, "grounder": {"training": {"steps": 4}},
                    "proposal_classifier": {"training": {"steps": 4}}, "mask_proposals": {"count": 10},
                    "n_box_proposals": 10, "grabcut_iterations": 1},
    "grn": {"model": {"text_hidden": 8, "gate_hidden": 8, "fc_dim": 8}, "training": {"steps": 4, "batch_size": 8},
            "rpn": {"training": {"steps": 3, "batch_size": 4}, "proposals_per_image": 5}, "figure_examples": 1},
    "vision_text_only": {"glove_vocabulary": 2000, "lowres_training": {"steps": 4, "warmup_steps": 2}, "highres_training": {"steps": 4},
                         "full_training": {"steps": 3}, "figure_examples": 1,
                         "category": {"fcn_hidden": 8, "fcn_training": {"steps": 3, "batch_size": 4}, "text_hidden": 8,
                                      "mlp_hidden": 8, "classifier_training": {"steps": 3, "batch_size": 8}}},
}
TOP_LEVEL_IGNORED = {".venv", ".git", "data", "models", ".pytest_cache", ".prefect", "reports"}
ANYWHERE_IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info")


def _ignore(directory: str, names: list[str]) -> set[str]:
    """Skip generated artifacts: the copy starts from sources and params only."""
    ignored = set(ANYWHERE_IGNORED(directory, names))
    if Path(directory) == REPO_ROOT:
        ignored |= TOP_LEVEL_IGNORED & set(names)
    if Path(directory) == REPO_ROOT / ".dvc":
        # config.local: this machine's DVC settings (e.g. its own remote url) stay out of the copy.
        ignored |= {"cache", "tmp", "config.local"} & set(names)
    return ignored


def env_for(cwd: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(cwd), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1")


def run(cmd: list[str], cwd: Path, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env_for(cwd), capture_output=True, text=True, timeout=timeout)


def read_params(work: Path) -> dict:
    return yaml.safe_load((work / "params.yaml").read_text())


def write_params(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repo(work: Path, overrides: dict | None = None) -> Path:
    """Copy the sources to `work`, apply the tiny overrides (and `overrides`), commit it as a git repo."""
    shutil.copytree(REPO_ROOT, work, ignore=_ignore)
    write_params(work, deep_merge(deep_merge(deep_merge(read_params(work), TINY_OVERRIDES), E2E_OVERRIDES),
                                  overrides or {}))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        assert run(cmd, work).returncode == 0
    return work
