"""reports/segmentation.md: the segmentation paper's Tables 1 and 2 beside ours, results per expression kind,
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
from refexp.reporting.significance import mask_scores, significance_table  # noqa: E402
from refexp.reporting.tables import markdown_table  # noqa: E402

log = logging.getLogger(__name__)

REPORT = "segmentation"  # the name: reports/segmentation.md, figures/segmentation/
THRESHOLDS = ("0.5", "0.6", "0.7", "0.8", "0.9")
# Table 1 of the paper (ReferIt test, %): prec@0.5 .. prec@0.9, overall IoU; keyed by our row where we have it.
PAPER_TABLE1 = [
    ("whole image", (5.07, 2.85, 1.58, 0.81, 0.41, 15.12), "whole_image"),
    ("per-word average", (10.97, 5.94, 2.35, 0.45, 0.00, 27.23), "per_word_average"),
    ("per-word intersection", (9.58, 5.35, 2.20, 0.43, 0.00, 26.69), "per_word_intersection"),
    ("per-word union", (10.46, 5.65, 2.28, 0.44, 0.00, 19.37), "per_word_union"),
    ("SCRC bbox", (9.73, 4.43, 1.51, 0.27, 0.03, 21.72), "scrc_bbox"),
    ("SCRC grabcut", (11.91, 7.71, 4.33, 1.78, 0.36, 17.84), "scrc_grabcut"),
    ("GroundeR bbox", (11.08, 6.20, 2.74, 0.78, 0.20, 20.50), "grounder_bbox"),
    ("GroundeR grabcut", (14.09, 9.62, 5.78, 2.65, 0.62, 20.09), "grounder_grabcut"),
    ("MCG classification", (12.72, 9.88, 7.38, 4.73, 1.88, 18.08), "proposal_classification"),
    ("Ours (low resolution)", (29.54, 21.61, 13.69, 5.94, 0.75, 45.57), "text_objseg_lowres"),
    ("Ours (high resolution)", (34.02, 26.71, 19.32, 11.63, 3.92, 48.03), "text_objseg_highres"),
]
# Table 2: seconds per (image, expression) on a K40 GPU, and the row of ours that times the same method.
PAPER_TABLE2 = [("per-word", 0.169, "per_word_average"), ("SCRC grabcut", 4.319, "scrc_grabcut"),
                ("GroundeR grabcut", 3.753, "grounder_grabcut"), ("MCG classification", 9.375, "proposal_classification"),
                ("Ours (high resolution)", 0.325, "text_objseg_highres")]
# The paper's order: high resolution above low resolution, and both above every baseline (Sec. 4.2);
# GrabCut above the bounding box in precision, for SCRC and for GroundeR.
PAPER_ORDER = [("text_objseg_highres", "text_objseg_lowres")]
GRABCUT_ORDER = [("scrc_grabcut", "scrc_bbox"), ("grounder_grabcut", "grounder_bbox")]
SUBSTITUTES = ("Substitutes for what the paper used and cannot be installed here: box proposals are selective search "
               "(the dataset's proposal files; the paper: 100 EdgeBox proposals); segmentation proposals are graph-based "
               "(Felzenszwalb-Huttenlocher) segments at two scales and their selective-search merges, ranked by "
               "boundary contrast (refexp.data.mask_proposals; the paper: 100 MCG proposals); each proposal's feature "
               "is roi_align on the fixed conv body's map (the paper: VGG-16 on each crop).")
BASELINE_STAGE = "evaluate_text_objseg_baseline"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _cells(metrics: dict) -> list[str]:
    return [f"{100 * metrics[f'test/prec_at_{t}']:.2f}" for t in THRESHOLDS] + [
        f"{100 * metrics['test/overall_iou']:.2f}", f"{100 * metrics['test/mean_iou']:.2f}"]


def _curves_figure(paths: Paths, variants: list[str], out: Path) -> bool:
    """Training loss of each variant at both resolutions, and of the baselines' trained parts."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
    panels = [(f"train_text_objseg_{r}", variants, "loss/logistic", f"{r}: weighted logistic loss") for r in ("lowres", "highres")]
    panels.append(("train_text_objseg_baseline", ["per_word", "grounder", "proposal_classifier"], "loss",
                   "baselines: training loss"))
    drawn = False
    for ax, (stage, items, column, title) in zip(axes, panels):
        for item in items:
            csv = paths.plots(stage, item)
            if csv.exists():
                curve = pd.read_csv(csv)
                ax.plot(curve["step"], curve[column], label=item)
                drawn = True
        ax.set_title(title)
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


# Words that end an expression's head phrase ("the cross | on the ground", "the ground right | of the grass").
HEAD_PHRASE_ENDS = frozenset({"on", "in", "at", "above", "below", "under", "over", "beneath", "beside", "near",
                              "behind", "by", "with", "between", "of", "to", "from", "next", "inside", "against"})


def head_phrase(tokens: list[str]) -> list[str]:
    """The words before the first preposition: where the expression names what it refers to."""
    for i, word in enumerate(tokens):
        if word in HEAD_PHRASE_ENDS:
            return tokens[:i]
    return tokens


def region_is_stuff(table: pd.DataFrame, stuff_words: list[str]) -> pd.Series:
    """Per row: its region is stuff (sky, water, ...) when one of the region's expressions names a stuff word
    in its head phrase (the paper's object / stuff split of ReferIt, Sec. 4.2, by a word list: ReferIt labels
    neither). A stuff word after a preposition is a landmark: "the cross on the ground" is an object."""
    words = set(stuff_words)
    names_stuff = table["expression"].str.split().apply(lambda tokens: bool(words & set(head_phrase(tokens))))
    return names_stuff.groupby(table["region_id"]).transform("any").astype(bool)


def _breakdown(tables: dict[str, pd.DataFrame], stuff_words: list[str]) -> tuple[list[str], list[list[str]]]:
    """prec@0.5 (%) per expression kind and for object vs stuff regions, one row per method."""
    first = next(iter(tables.values()))
    stuff = region_is_stuff(first, stuff_words)
    groups = [(f"{k} ({int((first['kind'] == k).sum())})", (first["kind"] == k).to_numpy())
              for k in sorted(first["kind"].unique())]
    groups += [(f"object ({int((~stuff).sum())})", (~stuff).to_numpy()), (f"stuff ({int(stuff.sum())})", stuff.to_numpy())]
    rows = []
    for name, table in tables.items():
        hit = (table["iou"] >= 0.5).to_numpy()
        rows.append([f"`{name}`", *[f"{100 * hit[m].mean():.2f}" if m.any() else "–" for _, m in groups]])
    return ["method", *[g for g, _ in groups]], rows


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
            rows.append([f"{name} (ours)", "not run", *["–"] * 6])
    lines += ["## Table 1: the paper beside ours (%)", "",
              f"Test split of `{s.dataset}`, the same queries for every row; a prediction is mapped back to the "
              "image's own size before it is scored. \"not run\": that row's params entry is absent.", "",
              *markdown_table(header, rows), "", *_baseline_notes(cfg, paths, ev), ""]
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
    over_baselines = [(f"text_objseg_{r}", b) for r in ("highres", "lowres") for b in s.baselines]
    grabcut_claims = [c for c in GRABCUT_ORDER if all(name in s.baselines for name in c)]
    scores = mask_scores(prediction_files)
    hits, overall, ious = scores["prec_at_0.5"], scores["overall_iou"], scores["mean_iou"]
    in_study = "text_objseg" in cfg.seed_study.models
    baselines_note = ("training-seed noise comes on top; the seed study retrains our model, not the baselines, so "
                      "seed_study.md does not judge these claims.")
    lines += ["## The paper's claims on our data", "", "High resolution above low resolution:", "",
              *significance_table(hits, PAPER_ORDER, cfg.run.seed, "prec@0.5", in_seed_study=in_study),
              *significance_table(overall, PAPER_ORDER, cfg.run.seed, "overall IoU", in_seed_study=in_study),
              *significance_table(ious, PAPER_ORDER, cfg.run.seed, "mean IoU", in_seed_study=in_study),
              "Ours above every baseline:", "",
              *significance_table(hits, over_baselines, cfg.run.seed, "prec@0.5", seed_note=baselines_note),
              *significance_table(overall, over_baselines, cfg.run.seed, "overall IoU", seed_note=baselines_note),
              *significance_table(ious, over_baselines, cfg.run.seed, "mean IoU", seed_note=baselines_note)]
    if grabcut_claims:
        lines += ["GrabCut above the bounding box it starts from:", "",
                  *significance_table(hits, grabcut_claims, cfg.run.seed, "prec@0.5", seed_note=baselines_note),
                  *significance_table(overall, grabcut_claims, cfg.run.seed, "overall IoU", seed_note=baselines_note)]
    ours_pairs = [(f"{v}_highres", "text_objseg_highres") for v in extra]
    if ours_pairs:
        lines += ["### Our variants against the code's model (not claims of the paper)", "",
                  *significance_table(hits, ours_pairs, cfg.run.seed, "prec@0.5", in_seed_study=in_study)]

    tables = {name: pd.read_parquet(path) for name, path in prediction_files.items() if path.exists()}
    if "text_objseg_highres" in tables:
        table = tables["text_objseg_highres"]
        order = ["text_objseg_highres", "text_objseg_lowres", *s.baselines]
        head, rows = _breakdown({n: tables[n] for n in order if n in tables}, s.stuff_words)
        lines += ["## Per expression kind and for object vs stuff regions (prec@0.5, %)", "",
                  "Queries per group in the header. A region is stuff when one of its expressions names one of "
                  f"`text_objseg.stuff_words` ({len(s.stuff_words)} words: {', '.join(s.stuff_words[:8])}, ...) "
                  "before its first preposition (\"the ground right of the grass\"; \"the cross on the ground\" "
                  "is an object).", "",
                  *markdown_table(head, rows), ""]
        empty = int((table["predicted_pixels"] == 0).sum())
        lines += [f"Empty predictions of ours (high resolution): {empty} of {len(table)} test queries "
                  f"({100 * empty / len(table):.2f}%).", ""]
        fig = paths.figures(REPORT) / "examples.png"
        if _examples_figure(cfg, paths, "text_objseg", table, fig):
            lines += ["## Examples (high resolution)", "",
                      f"The {s.figure_examples} best and {s.figure_examples} worst test queries by IoU (cf. the "
                      "paper's Figs. 5-7).", "", f"![examples](figures/{REPORT}/{fig.name})", ""]

    lines += _timing_section(cfg, paths, ev)
    curves = paths.figures(REPORT) / "training_curves.png"
    if _curves_figure(paths, variants, curves):
        lines += ["## Training curves", "", f"![training curves](figures/{REPORT}/{curves.name})", ""]
    lines += provenance(cfg, ("run", "training", "pretrain_backbone", "text_objseg"), paths.root)
    write_text(paths.report(REPORT), "\n".join(lines).rstrip() + "\n")
    return {"variants_reported": sum(1 for m in ev.values() if m)}


def _baseline_notes(cfg: Config, paths: Paths, ev: dict) -> list[str]:
    """What each baseline row ran on, with its counted cases."""
    s = cfg.text_objseg
    notes = [f"- {SUBSTITUTES}"]
    trained = {part: _read(paths.metrics("train_text_objseg_baseline", part)) for part in
               ("per_word", "grounder", "proposal_classifier")}
    per_word = next((ev[b] for b in s.baselines if s.baselines[b].kind == "per_word" and ev.get(b)), None)
    if per_word:
        unknown = per_word.get("test/no_known_word", 0)
        notes.append(f"- Per-word: {trained['per_word'].get('train/words', '?')} words (the {s.per_word.n_words} most "
                     f"frequent training words minus {len(s.per_word.stop_words)} stop words; the synthetic vocabulary "
                     f"is small); {unknown} of {per_word['test/queries']} test expressions "
                     f"({100 * unknown / per_word['test/queries']:.2f}%) have none of them and predict no pixel "
                     "(the paper: 2.83%). Positive labels weigh "
                     f"{s.per_word.positive_weight:g}x in its logistic loss (params).")
    for method, part in (("scrc", None), ("grounder", "grounder")):
        cut = ev.get(f"{method}_grabcut")
        if cut:
            fallbacks = {k.split("/")[-1]: v for k, v in cut.items() if k.startswith("test/grabcut/fallback")}
            source = (f"the trained `{s.scrc_variant}` (scrc.variants)" if part is None else
                      f"GroundeR trained towards the best-overlapping proposal ({100 * trained['grounder'].get('train/best_proposal_below_0.5', 0):.2f}% "
                      "of training queries have none at IoU >= 0.5)")
            notes.append(f"- {method} rows: the top of {s.n_box_proposals} box proposals by {source}; GrabCut "
                         f"({s.grabcut_iterations} iterations, rectangle init) ran on {cut['test/distinct_boxes']} "
                         f"distinct boxes and fell back to the rectangle on {sum(fallbacks.values())} "
                         f"({', '.join(f'{k}: {v}' for k, v in sorted(fallbacks.items())) or 'none'}).")
    pc = trained["proposal_classifier"]
    if pc:
        notes.append(f"- Proposal classification: {s.mask_proposals.count} segmentation proposals per image; a "
                     f"proposal is foreground at mask IoU >= {s.proposal_classifier.positive_iou:g} "
                     f"({100 * pc.get('train/positive_fraction', 0):.2f}% of training pairs); "
                     f"{100 * pc.get('train/best_proposal_below_0.5', 0):.2f}% of training queries have no proposal "
                     "at IoU >= 0.5.")
    return notes


def _timing_section(cfg: Config, paths: Paths, ev: dict) -> list[str]:
    """Table 2: each method's time per query beside the paper's K40 seconds."""
    proposals = _read(paths.metrics("propose_masks", cfg.text_objseg.dataset))
    rows = []
    for name, paper, ours in PAPER_TABLE2:
        m = ev.get(ours, {})
        if not m:
            rows.append([name, f"{paper:.3f}", "not run", "–"])
            continue
        ms = m["test/ms_per_query"]
        if ours == "proposal_classification" and proposals:  # one input's proposals, computed in their own stage
            ms += proposals["ms_per_image"]
        rows.append([name, f"{paper:.3f}", f"{ms / 1000:.4f}", f"`{ours}`"])
    return ["## Table 2: time per query (seconds)", "",
            "Paper: one K40 GPU; ours: this machine's CPU, batched, from pixels, each stage's own "
            "`test/ms_per_query` (the box rows read precomputed proposal files, as the paper's EdgeBox "
            "proposals were; MCG classification adds propose_masks' time per image). "
            "benchmarks/text_objseg.py measures them all in one run (reports/benchmarks.md).", "",
            *markdown_table(["method", "paper (K40)", "ours (CPU)", "our row"], rows), ""]
