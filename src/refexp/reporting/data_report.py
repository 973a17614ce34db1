"""reports/data.md: counts per split, expression lengths, and a sample image with its regions."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from refexp.artifacts import write_text  # noqa: E402
from refexp.config import Config  # noqa: E402
from refexp.paths import Paths  # noqa: E402
from refexp.reporting.provenance import provenance, run_summary  # noqa: E402


def split_counts(tuples: pd.DataFrame) -> pd.DataFrame:
    grouped = tuples.groupby("split")
    table = pd.DataFrame({
        "images": grouped["image_id"].nunique(),
        "regions": grouped["region_id"].nunique(),
        "expressions": grouped.size(),
        "mean tokens": grouped["tokens"].apply(lambda t: round(float(t.map(len).mean()), 2)),
    })
    order = [s for s in ("train", "val", "test") if s in table.index]
    return table.loc[order + [s for s in table.index if s not in order]]


def _markdown_table(df: pd.DataFrame, index_name: str) -> str:
    cols = [index_name, *map(str, df.columns)]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, *values in df.astype(object).itertuples():
        rows.append("| " + " | ".join([str(idx), *map(str, values)]) + " |")
    return "\n".join(rows)


def length_histogram(tables: dict[str, pd.DataFrame], max_tokens: int, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(0.5, max_tokens + 1.5)
    for name, df in tables.items():
        ax.hist(df["tokens"].map(len).clip(upper=max_tokens), bins=bins, alpha=0.6, density=True, label=name)
    ax.set_xlabel(f"expression length (tokens; {max_tokens} = {max_tokens} or more)")
    ax.set_ylabel("share of expressions")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def draw_sample(tuples: pd.DataFrame, image_id: str, root: Path, out: Path) -> None:
    """The image with every annotated region: mask overlay where present, box, and one expression."""
    rows = tuples[tuples["image_id"] == image_id].drop_duplicates("region_id")
    image = np.asarray(Image.open(root / rows["image_path"].iloc[0]).convert("RGB"))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image)
    colours = plt.get_cmap("tab10")
    overlay = np.zeros((*image.shape[:2], 4))
    for i, row in enumerate(rows.itertuples()):
        colour = colours(i % 10)
        if isinstance(row.mask_rle, str):
            rle = {"size": [int(row.image_height), int(row.image_width)], "counts": row.mask_rle.encode()}
            overlay[mask_utils.decode(rle).astype(bool)] = (*colour[:3], 0.45)
        ax.add_patch(Rectangle((row.x1 - 0.5, row.y1 - 0.5), row.x2 - row.x1 + 1, row.y2 - row.y1 + 1,
                               fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(row.x1, row.y1 - 1, row.expression, color="white", fontsize=6,
                bbox={"facecolor": colour, "alpha": 0.7, "pad": 1, "linewidth": 0})
    ax.imshow(overlay)
    ax.set_axis_off()
    ax.set_title(f"image {image_id}: {len(rows)} regions")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _accounting(prepared: dict, stage: str, kept: int | dict[str, int]) -> list[str]:
    """What the prepare stage read, kept, skipped and kept with a defect, and which cross-checks it made."""
    def listed(prefix: str) -> list[str]:
        return [f"- {k.removeprefix(prefix)}: {v}" for k, v in sorted(prepared.items()) if k.startswith(prefix)]

    read = {k.removeprefix("input/"): v for k, v in prepared.items() if k.startswith("input/")}
    kept = kept if isinstance(kept, dict) else {unit: kept for unit in read}
    lines = [f"Read by {stage}: " + ", ".join(f"{v} {unit} ({kept.get(unit, '?')} kept)" for unit, v in sorted(read.items()))
             + ".", ""] if read else []
    lines += ["Counted skips:", "", *(listed("skipped/") or ["- none"]), ""]
    lines += ["Kept with a defect (the row stays, the field is missing):", "", *(listed("kept_with_defect/") or ["- none"]), ""]
    checks = listed("checks/")
    return lines + (["Cross-checks (false: the layout lacks the file, so it was not made):", "", *checks, ""] if checks else [])


def build_data_report(cfg: Config, paths: Paths) -> dict:
    section = cfg.report_data
    tables = {name: pd.read_parquet(paths.tuples(name)) for name in cfg.prepare_referit.datasets}
    names = [*cfg.prepare_referit.datasets, *cfg.prepare_coco.datasets]
    lines = ["# Data", "", *run_summary(cfg, names, [])]
    metrics: dict[str, int] = {}
    for name, df in tables.items():
        prepared = json.loads(paths.metrics("prepare_referit", name).read_text())
        lines += [f"## {name} ({cfg.dataset(name).source}, {cfg.dataset(name).format} format)", "",
                  _markdown_table(split_counts(df), "split"), "",
                  f"Vocabulary: {prepared.get('vocab/size', '?')} entries, from the {prepared.get('vocab/source', '?')}.", ""]
        if "kind" in df and df["kind"].notna().any():
            kinds = df.groupby(["split", "kind"]).size().unstack(fill_value=0)
            lines += ["Expressions by kind:", "", _markdown_table(kinds, "split"), ""]
        metrics[f"{name}/expressions"] = len(df)
        lines += _accounting(prepared, "prepare_referit", len(df))
    for name in cfg.prepare_coco.datasets:
        captions = pd.read_parquet(paths.prepared(name) / "captions.parquet")
        instances = pd.read_parquet(paths.prepared(name) / "instances.parquet")
        table = pd.DataFrame({"images": captions.groupby("split")["image_id"].nunique(),
                              "captions": captions.groupby("split").size(),
                              "instances": instances.groupby("split").size()}).fillna(0).astype(int)
        lines += [f"## {name} ({cfg.dataset(name).source}, COCO format)", "", _markdown_table(table, "split"), ""]
        lines += _accounting(json.loads(paths.metrics("prepare_coco", name).read_text()), "prepare_coco",
                             {"captions": len(captions), "instances": len(instances)})
        metrics[f"{name}/captions"] = len(captions)
    histogram = paths.figures("data") / "expression_lengths.png"
    length_histogram(tables, section.histogram_max_tokens, histogram)
    lines += ["## Expression lengths", "", f"![expression lengths](figures/data/{histogram.name})", ""]
    lines += ["## Samples", ""]
    for name, df in tables.items():
        with_images = df[df["image_path"].notna()]
        for image_id in with_images["image_id"].drop_duplicates().head(section.sample_images):
            out = paths.figures("data") / f"sample_{name}_{image_id}.png"
            draw_sample(with_images, image_id, paths.root, out)
            lines += [f"![{name} image {image_id}](figures/data/{out.name})", ""]
    lines += provenance(cfg, ("datasets", "synthetic", "prepare_referit", "prepare_coco"), paths.root)
    write_text(paths.report("data"), "\n".join(lines))
    return metrics
