"""reports/scrc.md: the paper's Tables 1 and 2 beside ours, per expression kind, the scarce-data
transfer pair, summed vs length-normalised scoring, chance levels, figures of correct and failed
retrievals, and training curves. Reads only the metrics/plots/predictions the SCRC stages wrote.
"""
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

from refexp.artifacts import write_text  # noqa: E402
from refexp.config import Config, ScrcConfig  # noqa: E402
from refexp.metrics.boxes import IOU_THRESHOLD, box_iou  # noqa: E402
from refexp.paths import Paths  # noqa: E402
from refexp.data.proposals import EDGEBOX, SELECTIVE_SEARCH  # noqa: E402
from refexp.reporting.provenance import ModelInput, numerics_lines, provenance, run_summary  # noqa: E402
from refexp.reporting.significance import per_query_scores, significance_table  # noqa: E402
from refexp.reporting.tables import markdown_table  # noqa: E402

# Hu et al. 2016, Table 1 (P@1 on annotated boxes, ReferIt) and Table 2 (100 EdgeBox proposals).
PAPER_ROWS = [
    # (our variant, paper's row name, Table 1 P@1, Table 2 R@1, Table 2 R@10)
    (None, "CAFFE-7K [10]", 27.73, 10.38, 26.20),
    ("lrcn_retriever", "LRCN [4]", 38.38, 8.59, 31.86),
    ("scrc_no_context_spatial_transfer", "SCRC (w/o context, spatial, transfer)", 61.03, 14.53, 40.72),
    ("scrc_no_context_spatial", "SCRC (w/o context, spatial)", 64.09, 15.78, 42.54),
    ("scrc_no_context", "SCRC (w/o context)", 70.15, 17.68, 44.77),
    ("scrc_full", "SCRC", 72.74, 17.93, 45.27),
]
PAPER_ORACLE = 59.38
KINDS = ("attribute", "position", "relation")
FIGURE_DIR = "scrc"


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}%"


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def paper_order_claims() -> list[tuple[str, str]]:
    """Each row of the paper's Table 1 chain beats the row before it: (better, worse) pairs."""
    chain = [v for v, *_ in PAPER_ROWS if v]
    return list(zip(chain[1:], chain[:-1]))


def scarce_data_claims(s: ScrcConfig) -> list[tuple[str, str]]:
    """Each scarce-data variant with transfer against its twin without (same fraction, flags and
    fine-tuning schedule)."""
    scarce = {v: var for v, var in s.variants.items() if var.train_fraction < 1.0}
    twin = lambda var: var.model_dump(exclude={"transfer"})  # noqa: E731
    return [(a, b) for a, va in scarce.items() for b, vb in scarce.items()
            if va.transfer and not vb.transfer and twin(va) == twin(vb)]


def in_paper_order(values: list[float]) -> bool:
    """Ablations fall in the paper's order: each row at least as good as the one before."""
    return all(b >= a for a, b in zip(values, values[1:]))


def example_figure(pred: pd.DataFrame, root: Path, out: Path, title: str, n: int) -> bool:
    """Image, expression, ground truth (yellow) and top-1 prediction (green correct / red wrong)."""
    if pred.empty or n == 0:
        return False
    rows = pred.head(n)
    fig, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 3.4), squeeze=False)
    for ax, (_, r) in zip(axes[0], rows.iterrows()):
        with Image.open(root / r["image_path"]) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        for box, colour in ((r["gt"], "yellow"), (r["pred_box"], "lime" if r["correct"] else "red")):
            x1, y1, x2, y2 = [float(v) for v in box]
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, lw=2, ec=colour))
        ax.set_title("\n".join([r["expression"][i:i + 28] for i in range(0, len(r["expression"]), 28)][:2]), fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return True


def top1_predictions(pred: pd.DataFrame) -> pd.DataFrame:
    """Add pred_box (top-1 annotated box by summed log-likelihood) and correct (IoU >= 0.5)."""
    pred = pred.copy()
    boxes, correct = [], []
    for _, r in pred.iterrows():
        # parquet returns a list of lists as an array of arrays
        cands = np.array([np.asarray(c, dtype=np.float64) for c in r["annotated"]]).reshape(-1, 4)
        if len(cands) == 0:
            boxes.append([0.0, 0.0, 0.0, 0.0])
            correct.append(False)
            continue
        best = cands[int(np.argmax(np.asarray(r["annotated_ll"])))]
        boxes.append(best.tolist())
        correct.append(bool(box_iou(best[None], np.asarray(r["gt"], dtype=np.float64)[None])[0, 0] >= IOU_THRESHOLD))
    pred["pred_box"] = boxes
    pred["correct"] = correct
    return pred


def curves_figure(paths: Paths, variants: list[str], out: Path) -> bool:
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for stage, name in [("pretrain_scrc", "pretrained")] + [("train_scrc", v) for v in variants]:
        path = paths.plots(stage, name)
        if path.exists():
            curve = pd.read_csv(path)
            if not curve.empty:
                ax.plot(curve["step"], curve["loss"], label=f"{name} ({stage})")
                drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("step")
    ax.set_ylabel("-log p(S | ...) per tuple")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return True


PROPOSAL_TEXT = {EDGEBOX: "EdgeBox, the released top-100 files (as the paper)",
                 SELECTIVE_SEARCH: "OpenCV selective search (fast mode) on the images, top 100 (not the paper's EdgeBox)"}


def build_scrc_report(cfg: Config, paths: Paths) -> dict:
    s = cfg.scrc
    variants = list(s.variants)
    ev = {v: _load(paths.metrics("evaluate_scrc", v)) for v in variants}
    tr = {v: _load(paths.metrics("train_scrc", v)) for v in variants}
    pre = _load(paths.metrics("pretrain_scrc", "pretrained"))
    any_eval = next((m for m in ev.values() if m), {})
    pre_cfg = s.pretrain_config(cfg.training)
    ft = {v: s.finetune_config(cfg.training, v) for v in variants}
    main_ft = ft.get("scrc_full", next(iter(ft.values())))
    crops = (f"{s.image_size} px, I_box and I_im resized to {s.crop_size} px; "
             + ("frozen, descriptors from the feature cache" if s.frozen_backbone else "trained end to end"))
    lines = ["# SCRC: natural language object retrieval (Hu et al. 2016)", ""]
    lines += run_summary(cfg, [s.dataset, s.caption_dataset], [ModelInput("CNN_local / CNN_global", s.backbone,
                                                                          s.pretrained, crops)])
    method = any_eval.get("test/proposal_source", "?")
    lines += [f"- x_box / x_context: {'VGG-16 fc8, 1000-d (the paper)' if s.image_feature == 'fc8' else f'{s.feature_dim}-d projection of the pooled feature map (the paper: VGG-16 fc8, 1000-d)'}; "
              f"LSTMs {s.hidden}-d (paper 1000-d); word embedding {s.embed_dim}-d",
              f"- Caption pretraining: {pre_cfg.steps} steps of {pre_cfg.batch_size} on {pre.get('train/captions', '?')} "
              f"captions, {pre_cfg.optimizer} lr {pre_cfg.lr} ({pre_cfg.schedule}); fine-tuning on the "
              f"`{s.finetune_split}` tuples, {main_ft.steps} steps of {main_ft.batch_size}, {main_ft.optimizer} lr "
              f"{main_ft.lr} ({main_ft.schedule}); the paper: SGD, 0.01 then 0.001 (the released solvers); seed {cfg.run.seed}",
              f"- Proposals: `{method}`: {PROPOSAL_TEXT.get(method, method)}",
              f"- Test queries: {any_eval.get('test/queries', '?')} over {any_eval.get('test/images', '?')} images; P@1 on "
              "all of them, R@1/R@10 over proposals on "
              + (f"a seeded subset of {any_eval.get('test/proposal_queries', s.proposal_queries)} queries "
                 "(scrc.proposal_queries: each query costs one LSTM_local recurrence per proposal)"
                 if s.proposal_queries is not None else "all of them"), ""]

    # ---- Table 1 and 2 side by side
    rows1, rows2 = [], []
    for variant, name, p1, r1, r10 in PAPER_ROWS:
        m = ev.get(variant, {}) if variant else {}
        steps = tr.get(variant, {}).get("train/steps", "–") if variant else "–"
        ours = "not reproduced (needs the 7K-class ImageNet classifier of [10])" if variant is None else _pct(m.get("test/p_at_1"))
        rows1.append([name, f"{p1:.2f}%", ours, *[_pct(m.get(f"test/p_at_1/{k}")) for k in KINDS], str(steps)])
        rows2.append([name, f"{r1:.2f}%", f"{r10:.2f}%", _pct(m.get("test/recall_at_1")), _pct(m.get("test/recall_at_10"))])
    chance = any_eval.get("test/chance_p_at_1")
    rows1.append(["chance (uniform pick among annotated boxes)", "–", _pct(chance),
                  *[_pct(any_eval.get(f"test/chance_p_at_1/{k}")) for k in KINDS], "–"])
    rows2.append(["Oracle (some proposal has IoU >= 0.5)", "–", f"{PAPER_ORACLE:.2f}%", "–",
                  _pct(any_eval.get("test/oracle_recall_at_100"))])
    rows2.append(["chance (uniform pick among proposals)", "–", "–", _pct(any_eval.get("test/chance_recall_at_1")), "–"])
    lines += ["## Table 1: P@1 over the image's annotated boxes", "",
              "Paper: ReferIt test set. Ours: the dataset above; per expression kind where the data has kinds.", "",
              *markdown_table(["Method", "paper P@1", "ours P@1", *[f"ours {k}" for k in KINDS], "fine-tune steps"], rows1)]
    order_rows = []
    chain = [v for v, *_ in PAPER_ROWS if v]
    for suffix, label in [("", "all")] + [(f"/{k}", k) for k in KINDS]:
        vals = [ev.get(v, {}).get(f"test/p_at_1{suffix}") for v in chain]
        if all(v is not None for v in vals):
            order_rows.append([label, " ≤ ".join(_pct(v) for v in vals), "yes" if in_paper_order(vals) else "no"])
    if order_rows:
        lines += ["Paper's order (LRCN ≤ w/o context, spatial, transfer ≤ w/o context, spatial ≤ w/o context ≤ SCRC), "
                  "ours per kind:", "", *markdown_table(["kind", "P@1 along the paper's order", "in order"], order_rows)]
    correct = per_query_scores({v: paths.stage_dir("evaluate_scrc", v) / "predictions.parquet" for v in variants},
                               lambda t: top1_predictions(t)["correct"].to_numpy(),
                               ["annotated", "annotated_ll", "gt"])
    lines += significance_table(correct, paper_order_claims(), cfg.run.seed, "P@1")
    oracle = any_eval.get("test/oracle_recall_at_100")
    lines += [f"## Table 2: top-{s.n_proposals} proposals", "",
              f"Paper: EdgeBox proposals on ReferIt. Ours: `{method}`. Oracle R@{s.n_proposals}, the share of test "
              f"queries with some proposal at IoU >= 0.5 and the ceiling of every R@K: ours {_pct(oracle)}, the "
              f"paper's {PAPER_ORACLE:.2f}%"
              + ("." if oracle is None else f" ({100 * oracle - PAPER_ORACLE:+.2f} points: the synthetic scenes' flat "
                 "shapes on textured stuff are easier to propose than real photographs)." if oracle * 100 > PAPER_ORACLE
                 else "."), "",
              *markdown_table(["Method", "paper R@1", "paper R@10", "ours R@1", "ours R@10"], rows2)]

    # ---- scarce data
    scarce = [(v, var) for v, var in s.variants.items() if var.train_fraction < 1.0]
    if scarce:
        rows = [[v, f"{var.train_fraction:.0%}", str(var.transfer), str(tr.get(v, {}).get("train/tuples", "–")),
                 _pct(ev.get(v, {}).get("test/p_at_1")), _pct(ev.get(v, {}).get("test/recall_at_1"))] for v, var in scarce]
        lines += ["## Scarce fine-tuning data: does caption pretraining help?", "",
                  "The paper's Kitchen experiment (Table 3) shows transfer matters most when the retrieval set is "
                  "small; here the same pair is fine-tuned on a seeded subset of the training images.", "",
                  *markdown_table(["variant", "train images", "transfer", "train tuples", "P@1", "R@1"], rows)]
        lines += significance_table(correct, scarce_data_claims(s), cfg.run.seed, "P@1")

    # ---- other variants (not rows of the paper's tables)
    listed = {v for v, *_ in PAPER_ROWS if v} | {v for v, _ in scarce}
    others = [v for v in variants if v not in listed]
    if others:
        rows = [[v, ", ".join(f"{k}={val}" for k, val in s.variants[v].model_dump(exclude={"training"}).items()),
                 _pct(ev[v].get("test/p_at_1")), *[_pct(ev[v].get(f"test/p_at_1/{k}")) for k in KINDS],
                 _pct(ev[v].get("test/recall_at_1"))] for v in others]
        lines += ["## Other variants", "",
                  "`scrc_image_free` reads x_spatial and the words only (no x_box, no x_context): the model the "
                  "real image-free ReferIt experiment trains (reports/referit_image_free.md).", "",
                  *markdown_table(["variant", "flags", "P@1", *KINDS, "R@1"], rows)]

    # ---- scoring
    scored = [v for v in variants if ev[v]]
    rows = [[v, _pct(ev[v].get("test/p_at_1")), _pct(ev[v].get("test/p_at_1_length_normalised"))] for v in scored]
    differing = [v for v in scored if ev[v].get("test/p_at_1") != ev[v].get("test/p_at_1_length_normalised")]
    lines += ["## Scoring: summed vs length-normalised log-likelihood", "",
              "The paper's score (Eq. 7) is the product of the word probabilities, i.e. the summed log-likelihood "
              "(<eos> included, as in LRCN). All candidates of one query are scored on the same words, so dividing by "
              "the length rescales every candidate's score by the same positive factor and cannot change the ranking. "
              + (f"Here the two P@1 agree for all {len(scored)} variants." if not differing else
                 f"Here they differ for {', '.join(f'`{v}`' for v in differing)}: a tie broken differently.") + "", "",
              *markdown_table(["variant", "P@1 summed (paper)", "P@1 length-normalised"], rows)]

    # ---- speed
    rows = [[v, f"{tr[v].get('train/samples_per_s', 0):.0f}" if tr[v].get("train/samples_per_s") else "–",
             f"{tr[v].get('train/seconds', 0):.1f}" if tr[v].get("train/seconds") else "–",
             f"{ev[v].get('eval/ms_per_query', float('nan')):.1f}" if ev[v] else "–"] for v in variants]
    lines += ["## Training and evaluation cost on this CPU", "",
              *markdown_table(["variant", "train samples/s", "train seconds", "eval ms/query"], rows),
              "Backbone raw forward+backward speed beside the training rate: reports/benchmarks.md (## Training: SCRC).", ""]

    # ---- figures
    fig_dir = paths.figures(FIGURE_DIR)
    main = "scrc_full" if "scrc_full" in variants else variants[0]
    pred_path = paths.stage_dir("evaluate_scrc", main) / "predictions.parquet"
    figures = []
    if pred_path.exists() and s.figure_examples:
        pred = top1_predictions(pd.read_parquet(pred_path))
        for flag, label in ((True, "correct"), (False, "failed")):
            out = fig_dir / f"{main}_{label}.png"
            part = pred[pred["correct"] == flag].sample(frac=1.0, random_state=cfg.run.seed)
            if example_figure(part, paths.root, out, f"{main}: {label} top-1 (yellow = ground truth, "
                              f"{'green' if flag else 'red'} = prediction)", s.figure_examples):
                figures.append((label, out))
    if curves_figure(paths, variants, fig_dir / "training_curves.png"):
        figures.append(("training curves", fig_dir / "training_curves.png"))
    lines += numerics_lines(paths.reports, "scrc")
    if figures:
        lines += ["## Figures", ""]
        for label, out in figures:
            lines += [f"### {label}", "", f"![{label}]({out.relative_to(paths.reports).as_posix()})", ""]
    lines += provenance(cfg, ("datasets", "pretrain_backbone", "training", "scrc"), paths.root)
    write_text(paths.report("scrc"), "\n".join(lines).rstrip() + "\n")
    return {"variants_reported": sum(1 for m in ev.values() if m), "figures": len(figures)}
