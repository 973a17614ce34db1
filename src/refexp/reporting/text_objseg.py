"""reports/text_objseg.md: the segmentation paper's Tables 1 and 2 beside ours, results per expression kind,
the paper's ordering claims with intervals that resample test images, example figures and training curves."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from refexp.artifacts import atomic_path, write_text  # noqa: E402
from refexp.config import Config  # noqa: E402
from refexp.paths import Paths  # noqa: E402
from refexp.reporting.provenance import ModelInput, provenance, run_summary  # noqa: E402
from refexp.reporting.significance import per_query_scores, significance_table  # noqa: E402
from refexp.reporting.tables import markdown_table  # noqa: E402

log = logging.getLogger(__name__)

REPORT = "text_objseg"
THRESHOLDS = ("0.5", "0.6", "0.7", "0.8", "0.9")
# Table 1 of the paper (ReferIt test, %): prec@0.5 .. prec@0.9, overall IoU; keyed by our row where we have it.
PAPER_TABLE1 = [
    ("whole image", (5.07, 2.85, 1.58, 0.81, 0.41, 15.12), "whole_image"),
    ("per-word average", (10.97, 5.94, 2.35, 0.45, 0.00, 27.23), None),
    ("per-word intersection", (9.58, 5.35, 2.20, 0.43, 0.00, 26.69), None),
    ("per-word union", (10.46, 5.65, 2.28, 0.44, 0.00, 19.37), None),
    ("SCRC bbox", (9.73, 4.43, 1.51, 0.27, 0.03, 21.72), None),
    ("SCRC grabcut", (11.91, 7.71, 4.33, 1.78, 0.36, 17.84), None),
    ("GroundeR bbox", (11.08, 6.20, 2.74, 0.78, 0.20, 20.50), None),
    ("GroundeR grabcut", (14.09, 9.62, 5.78, 2.65, 0.62, 20.09), None),
    ("MCG classification", (12.72, 9.88, 7.38, 4.73, 1.88, 18.08), None),
    ("Ours (low resolution)", (29.54, 21.61, 13.69, 5.94, 0.75, 45.57), "text_objseg_lowres"),
    ("Ours (high resolution)", (34.02, 26.71, 19.32, 11.63, 3.92, 48.03), "text_objseg_highres"),
]
# Table 2: seconds per (image, expression) on a K40 GPU.
PAPER_TABLE2 = {"per-word": 0.169, "SCRC grabcut": 4.319, "GroundeR grabcut": 3.753, "MCG classification": 9.375,
                "Ours (high resolution)": 0.325}
# The paper's order: high resolution above low resolution, and both above every baseline (Sec. 4.2).
PAPER_ORDER = [("text_objseg_highres", "text_objseg_lowres")]
BASELINE_STAGE = "evaluate_text_objseg_baseline"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _cells(metrics: dict) -> list[str]:
    return [f"{100 * metrics[f'test/prec_at_{t}']:.2f}" for t in THRESHOLDS] + [
        f"{100 * metrics['test/overall_iou']:.2f}", f"{100 * metrics['test/mean_iou']:.2f}"]


def _curves_figure(paths: Paths, variants: list[str], out: Path) -> bool:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    drawn = False
    for ax, resolution in zip(axes, ("lowres", "highres")):
        for variant in variants:
            csv = paths.plots(f"train_text_objseg_{resolution}", variant)
            if csv.exists():
                curve = pd.read_csv(csv)
                ax.plot(curve["step"], curve["loss/logistic"], label=variant)
                drawn = True
        ax.set_title(f"{resolution}: weighted logistic loss")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    if drawn:
        with atomic_path(out) as tmp:
            fig.tight_layout()
            fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return drawn


def _examples_figure(cfg: Config, paths: Paths, variant: str, table: pd.DataFrame, out: Path) -> bool:
    """Image, expression, response map, prediction and ground truth for the best and worst test queries."""
    from refexp.data.coco import decode_rle
    from refexp.training import text_objseg

    n = cfg.text_objseg.figure_examples
    if not n or table.empty:
        return False
    ordered = table.sort_values("iou", kind="stable")
    picked = pd.concat([ordered.tail(n).iloc[::-1], ordered.head(n)])
    tuples, vocab = text_objseg.read_prepared(paths, cfg.text_objseg.dataset)
    rows = tuples.set_index(["region_id", "expression"]).loc[list(zip(picked["region_id"], picked["expression"]))]
    rows = rows.reset_index()
    model = text_objseg.load_trained(cfg, paths, variant, "highres", vocab)
    examples = text_objseg.build_examples(rows, vocab, paths.root, cfg.text_objseg.input_size,
                                          cfg.text_objseg.variant_model(variant).max_tokens, None)
    scores = text_objseg.predict_scores(model, examples, len(rows))
    fig, axes = plt.subplots(len(rows), 4, figsize=(9, 2.3 * len(rows)))
    for k, r in enumerate(rows.itertuples()):
        box = examples.letterboxes[examples.image_index[k]]
        restored = box.restore(scores[k])
        image = np.asarray(plt.imread(paths.root / r.image_path))
        truth = decode_rle(r.mask_rle, int(r.image_height), int(r.image_width))
        kind = "success" if k < n else "failure"
        panels = [(image, f"{kind}: \"{r.expression}\""), (restored, "response map"), (restored > 0, "prediction"),
                  (truth, "ground truth")]
        for ax, (data, title) in zip(axes[k], panels):
            ax.imshow(data, cmap=None if data.ndim == 3 else "viridis")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    with atomic_path(out) as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return True


def build_report(cfg: Config, paths: Paths) -> dict:
    s = cfg.text_objseg
    variants = list(s.variants)
    ev = {f"{v}_{r}": _read(paths.metrics("evaluate_text_objseg", f"{v}_{r}")) for v in variants for r in ("lowres", "highres")}
    ev.update({b: _read(paths.metrics(BASELINE_STAGE, b)) for b in s.baselines})
    detail = (f"fc head {s.variant_model(variants[0]).feature_dim}-d; conv layers "
              f"{'fixed' if s.freeze_conv else 'trained'}; resized and zero-padded to {s.input_size}x{s.input_size}")
    lines = ["# Segmentation from natural language expressions", "",
             *run_summary(cfg, [s.dataset], [ModelInput("segmentation model", s.backbone, s.pretrained,
                                                        f"{s.input_size} px", detail)])]
    header = ["method", *[f"prec@{t}" for t in THRESHOLDS], "overall IoU", "mean IoU"]
    rows = []
    for name, paper, ours in PAPER_TABLE1:
        rows.append([f"{name} (paper)", *[f"{v:.2f}" for v in paper], "–"])
        if ours and ev.get(ours):
            rows.append([f"**{name} (ours, `{ours}`)**", *_cells(ev[ours])])
        else:
            rows.append([f"{name} (ours)", "not reproduced yet", *["–"] * 6])
    lines += ["## Table 1: the paper beside ours (%)", "",
              f"Test split of `{s.dataset}`; a prediction is the score map mapped back to the image's own size and "
              "thresholded at 0. Baselines marked \"not reproduced yet\" are not built yet (issue 12 lists them); "
              "their paper numbers stand alone.", "", *markdown_table(header, rows), ""]
    extra = [v for v in variants if v != "text_objseg"]
    if extra:
        rows = [[f"`{v}` {r}", *_cells(ev[f"{v}_{r}"])] for v in variants for r in ("lowres", "highres")
                if ev.get(f"{v}_{r}")]
        lines += ["Our variants:", "", *markdown_table(header, rows), ""]
        for v in extra:
            lines.append(f"- `{v}`: {s.variants[v]}")
        lines.append("")

    prediction_files = {f"{v}_{r}": paths.stage_dir("evaluate_text_objseg", v) / f"{r}.parquet"
                        for v in variants for r in ("lowres", "highres")}
    prediction_files.update({b: paths.stage_dir(BASELINE_STAGE, b) / "predictions.parquet" for b in s.baselines})
    claims = [*PAPER_ORDER, *[(f"text_objseg_{r}", b) for r in ("highres", "lowres") for b in s.baselines]]
    hits = per_query_scores(prediction_files, lambda t: (t["iou"] >= 0.5).to_numpy(), ["iou"])
    ious = per_query_scores(prediction_files, lambda t: t["iou"].to_numpy(), ["iou"])
    lines += ["## The paper's claims on our data", "",
              *significance_table(hits, claims, cfg.run.seed, "prec@0.5", in_seed_study=False),
              *significance_table(ious, claims, cfg.run.seed, "mean IoU", in_seed_study=False)]
    ours_pairs = [(f"{v}_highres", "text_objseg_highres") for v in extra]
    if ours_pairs:
        lines += ["### Our variants against the code's model (not claims of the paper)", "",
                  *significance_table(hits, ours_pairs, cfg.run.seed, "prec@0.5", in_seed_study=False)]

    table_path = prediction_files.get("text_objseg_highres")
    if table_path and table_path.exists():
        table = pd.read_parquet(table_path)
        by_kind = table.groupby("kind").agg(queries=("iou", "size"), prec_05=("iou", lambda x: 100 * (x >= 0.5).mean()),
                                            mean_iou=("iou", lambda x: 100 * x.mean()))
        lines += ["## Per expression kind (high resolution, %)", "",
                  *markdown_table(["kind", "queries", "prec@0.5", "mean IoU"],
                                  [[k, str(int(r.queries)), f"{r.prec_05:.2f}", f"{r.mean_iou:.2f}"]
                                   for k, r in by_kind.iterrows()]), ""]
        empty = int((table["predicted_pixels"] == 0).sum())
        lines += [f"Empty predictions: {empty} of {len(table)} test queries ({100 * empty / len(table):.2f}%); "
                  f"expressions with no known word: {ev['text_objseg_highres'].get('test/no_known_word', 0)} "
                  "(the paper counts 2.83% for its per-word baseline).", ""]
        fig = paths.figures(REPORT) / "examples.png"
        if _examples_figure(cfg, paths, "text_objseg", table, fig):
            lines += ["## Examples (high resolution)", "",
                      f"The {s.figure_examples} best and {s.figure_examples} worst test queries by IoU (cf. the "
                      "paper's Figs. 5-7).", "", f"![examples](figures/{REPORT}/{fig.name})", ""]

    timing_rows = [["Ours (high resolution)", f"{PAPER_TABLE2['Ours (high resolution)']:.3f}",
                    f"{ev['text_objseg_highres'].get('test/ms_per_query', float('nan')) / 1000:.4f}"]] \
        if ev.get("text_objseg_highres") else []
    lines += ["## Table 2: time per query (seconds)", "",
              "Paper: a K40 GPU; ours: this machine's CPU, batched, from pixels (evaluate_text_objseg's "
              "test/ms_per_query). The other methods of Table 2 are baselines not reproduced yet.", "",
              *markdown_table(["method", "paper (K40)", "ours (CPU)"], timing_rows), ""]
    curves = paths.figures(REPORT) / "training_curves.png"
    if _curves_figure(paths, variants, curves):
        lines += ["## Training curves", "", f"![training curves](figures/{REPORT}/{curves.name})", ""]
    lines += provenance(cfg, ("run", "training", "pretrain_backbone", "text_objseg"), paths.root)
    write_text(paths.report(REPORT), "\n".join(lines).rstrip() + "\n")
    return {"variants_reported": sum(1 for m in ev.values() if m)}
