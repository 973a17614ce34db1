"""reports/seed_study.md: each variant's score at every training seed, and the papers' order claims
judged against training-seed noise (refexp.metrics.seeds), beside the papers' numbers."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from refexp.artifacts import atomic_path, write_text  # noqa: E402
from refexp.config import Config  # noqa: E402
from refexp.metrics.bootstrap import paired_difference  # noqa: E402
from refexp.metrics.seeds import seed_difference  # noqa: E402
from refexp.paths import Paths  # noqa: E402
from refexp.reporting.attention_regression import PAPER_ORDER, PAPER_TABLE3, PAPER_TABLE4, TABLE4_VARIANTS  # noqa: E402
from refexp.reporting.provenance import ModelInput, provenance, run_summary  # noqa: E402
from refexp.reporting.scrc_report import PAPER_ROWS, paper_order_claims, scarce_data_claims  # noqa: E402
from refexp.reporting.tables import markdown_table  # noqa: E402
from refexp.reporting.significance import VERDICT_TEXT  # noqa: E402
from refexp.reporting.text_objseg import PAPER_ORDER as SEGMENTATION_ORDER, PAPER_TABLE1  # noqa: E402
from refexp.reporting.text_objseg import REPORT as SEGMENTATION_REPORT  # noqa: E402
from refexp.reporting import grn as grn_report  # noqa: E402
from refexp.reporting import vision_text_only as vto_report  # noqa: E402
from refexp.training.seed_study import SHARED_SECTIONS, study_datasets  # noqa: E402

TITLES = {"scrc": "SCRC (paper 000), P@1 over the image's annotated boxes",
          "attention_regression": "Attention box regression (paper 003), accuracy (IoU >= 0.5)",
          "text_objseg": "Segmentation from natural language expressions, prec@0.5 (mask IoU >= 0.5)",
          "grn": "Expressional region retrieval (GRN), R@10 over the whole test corpus",
          "vision_text_only": "Vision-only and text-only data for segmentation, prec@0.5 (mask IoU >= 0.5) on "
                              "each dataset's first evaluation split"}
REPORT_NAMES = {"text_objseg": SEGMENTATION_REPORT, "grn": grn_report.REPORT, "vision_text_only": vto_report.REPORT}
# Table 1's columns: prec@0.5 .. prec@0.9, then overall IoU (the vision-only/text-only paper's tables too).
_TABLE1_PREC_05, _TABLE1_OVERALL_IOU = 0, 5


def vision_text_only_kinds(cfg: Config) -> dict[str, dict[str, str]]:
    """dataset -> the paper's row (baseline, embedding, synthesized, category, full) -> our row of it, as
    the model's report finds them (the first variant of a kind in params order)."""
    paths = Paths.from_config(cfg)
    return {d: vto_report.table_rows(cfg, paths, d)[0] for d in cfg.vision_text_only.datasets}


def vision_text_only_claims(cfg: Config) -> list[tuple[str, str]]:
    """Per dataset, the model report's claims among the rows it has: baseline < word embedding <
    synthesized < full, and category-only < full."""
    return list(dict.fromkeys((kinds[a], kinds[b]) for kinds in vision_text_only_kinds(cfg).values()
                              for a, b in vto_report.CLAIMS if a in kinds and b in kinds))


def _vision_text_only_paper(cfg: Config, column: int) -> dict[str, float]:
    out = {}
    for dataset, kinds in vision_text_only_kinds(cfg).items():
        table = vto_report.PAPER_TABLES.get(vto_report.paper_table(cfg, dataset) or "", (None, None, {}))[2]
        out.update({row: table[kind][column] for kind, row in kinds.items() if kind in table})
    return out


def paper_scores(model: str, column: int = _TABLE1_PREC_05, cfg: Config | None = None) -> dict[str, float]:
    """The paper's number (%) for each of our variants that is a row of its table (`column`: of the
    segmentation paper's Table 1 and the vision-only/text-only paper's tables, whose rows `cfg` maps)."""
    if model == "vision_text_only":
        return _vision_text_only_paper(cfg, column) if cfg is not None else {}
    if model == "scrc":
        return {v: p_at_1 for v, _, p_at_1, *_ in PAPER_ROWS if v}
    if model == "text_objseg":
        return {ours: values[column] for _, values, ours in PAPER_TABLE1 if ours}
    if model == "grn":
        return grn_report.paper_recall_at_10()
    return {**{v: acc for v, (_, acc) in PAPER_TABLE3.items()},
            **{v: PAPER_TABLE4[row] for v, row in TABLE4_VARIANTS.items() if v not in PAPER_TABLE3}}


def claims(cfg: Config, model: str) -> list[tuple[str, str]]:
    """(better, worse) pairs the paper asserts, as in the model's own report. For the segmentation model,
    high resolution above low resolution, for the paper's model and each of our variants of it. For the
    vision-only/text-only paper, per dataset: baseline < word embedding < synthesized < full, and
    category-only < full."""
    if model == "scrc":
        return paper_order_claims() + scarce_data_claims(cfg.scrc)
    if model == "text_objseg":
        ours = [(f"{v}_highres", f"{v}_lowres") for v in cfg.text_objseg.variants]
        return list(dict.fromkeys([*SEGMENTATION_ORDER, *ours]))
    if model == "grn":
        return list(dict.fromkeys(pair for pairs in grn_report.CLAIMS.values() for pair in pairs))
    if model == "vision_text_only":
        return vision_text_only_claims(cfg)
    return [*PAPER_ORDER, ("attention_full", "text_only")]


def seed_checks(hits: pd.DataFrame, model: str, a: str, b: str) -> dict[int, str]:
    """Per seed: the verdict of a - b over that seed's test queries, images resampled with their queries."""
    out = {}
    part = hits[hits["model"] == model]
    for seed, at_seed in part.groupby("seed", sort=True):
        qa, qb = at_seed[at_seed["variant"] == a], at_seed[at_seed["variant"] == b]
        if qa.empty or qb.empty:
            continue
        keys = ["image_id", "region_id", "expression"]
        if not qa[keys].reset_index(drop=True).equals(qb[keys].reset_index(drop=True)):
            raise ValueError(f"seed {seed}: {a} and {b} were not evaluated on the same test queries")
        out[int(seed)] = paired_difference(qa["hit"].to_numpy(), qb["hit"].to_numpy(), qa["image_id"].to_numpy(),
                                           seed=int(seed)).verdict
    return out


def summarise(scores: pd.DataFrame, cfg: Config, hits: pd.DataFrame | None = None) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Flat metrics (per variant mean/sd/min/max, per claim mean gap/interval/verdict and, with `hits`,
    the seeds at which the claim holds beyond that seed's test noise) and, per model, the claims table."""
    metrics: dict = {"seeds": sorted(int(s) for s in scores["seed"].unique())}
    claim_tables = {}
    for model, part in scores.groupby("model", sort=False):
        wide = part.pivot(index="seed", columns="variant", values="score").sort_index()
        for variant in wide.columns:
            col = wide[variant]
            metrics.update({f"{model}/{variant}/mean": float(col.mean()), f"{model}/{variant}/sd": float(col.std(ddof=1)),
                            f"{model}/{variant}/min": float(col.min()), f"{model}/{variant}/max": float(col.max())})
        if "overall_iou" in part.columns and part["overall_iou"].notna().any():
            iou = part.pivot(index="seed", columns="variant", values="overall_iou")
            for variant in iou.columns:
                metrics.update({f"{model}/{variant}/overall_iou/mean": float(iou[variant].mean()),
                                f"{model}/{variant}/overall_iou/sd": float(iou[variant].std(ddof=1))})
        rows = []
        for a, b in claims(cfg, model):
            if a not in wide.columns or b not in wide.columns:
                continue
            d = seed_difference(wide[a].to_numpy(), wide[b].to_numpy())
            key = f"{model}/claim/{a}>{b}"
            metrics.update({f"{key}/mean": d.mean, f"{key}/low": d.low, f"{key}/high": d.high,
                            f"{key}/seeds_ahead": d.seeds_a_ahead, f"{key}/verdict": d.verdict})
            row = {"claim": f"`{a}` > `{b}`", "per seed": " / ".join(f"{100 * x:+.2f}" for x in d.differences),
                   "mean": f"{100 * d.mean:+.2f}", "95% interval over seeds": f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}]",
                   "seeds with a > b": f"{d.seeds_a_ahead} of {d.n_seeds}"}
            if hits is not None:
                checks = seed_checks(hits, model, a, b)
                resolved = sum(v == "a > b" for v in checks.values())
                metrics[f"{key}/seeds_resolved"] = resolved
                row["seeds where it holds beyond test noise"] = f"{resolved} of {len(checks)}"
            row["over training seeds"] = VERDICT_TEXT[d.verdict]
            rows.append(row)
        claim_tables[model] = pd.DataFrame(rows)
    return metrics, claim_tables


def _markdown(df: pd.DataFrame) -> list[str]:
    return markdown_table(list(df.columns), df.astype(str).values.tolist())


def _score_table(part: pd.DataFrame, model: str, cfg: Config | None = None) -> pd.DataFrame:
    wide = part.pivot(index="variant", columns="seed", values="score")
    wide = wide.reindex(list(dict.fromkeys(part["variant"])))  # params order
    paper = paper_scores(model, cfg=cfg)
    out = pd.DataFrame({"variant": [f"`{v}`" for v in wide.index],
                        "paper %": [f"{paper[v]:.2f}" if v in paper else "—" for v in wide.index]})
    for seed in wide.columns:
        out[f"seed {seed} %"] = [f"{100 * x:.2f}" for x in wide[seed]]
    out["mean %"] = [f"{100 * x:.2f}" for x in wide.mean(axis=1)]
    out["sd (points)"] = [f"{100 * x:.2f}" for x in wide.std(axis=1, ddof=1)]
    if "overall_iou" in part.columns and part["overall_iou"].notna().any():  # the segmentation rows
        iou = part.pivot(index="variant", columns="seed", values="overall_iou").reindex(wide.index)
        paper_iou = paper_scores(model, _TABLE1_OVERALL_IOU, cfg)
        out["paper overall IoU %"] = [f"{paper_iou[v]:.2f}" if v in paper_iou else "—" for v in wide.index]
        out["overall IoU mean %"] = [f"{100 * x:.2f}" for x in iou.mean(axis=1)]
        out["overall IoU sd (points)"] = [f"{100 * x:.2f}" for x in iou.std(axis=1, ddof=1)]
    return out


def _kind_table(part: pd.DataFrame) -> pd.DataFrame | None:
    groups = [c for c in ("attribute", "position", "relation", "small_target", "large_target", "novel_words")
              if c in part.columns and part[c].notna().any()]
    if not groups:
        return None
    means = part.groupby("variant", sort=False)[groups].mean()
    out = pd.DataFrame({"variant": [f"`{v}`" for v in means.index]})
    for g in groups:  # "–": the variant has no such queries (ReferIt has no novel words)
        out[f"{g.replace('_', ' ')} %"] = [f"{100 * x:.2f}" if np.isfinite(x) else "–" for x in means[g]]
    return out


def _figure(scores: pd.DataFrame, out: Path) -> None:
    models = list(dict.fromkeys(scores["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = scores[scores["model"] == model]
        variants = list(dict.fromkeys(part["variant"]))
        for i, v in enumerate(variants):
            vals = 100 * part.loc[part["variant"] == v, "score"].to_numpy()
            ax.scatter(np.full(len(vals), i), vals, s=14, alpha=0.7)
            ax.hlines(vals.mean(), i - 0.3, i + 0.3, color="black")
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("%")
        ax.set_title(model, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def write_report(cfg: Config, scores: pd.DataFrame, claim_tables: dict[str, pd.DataFrame], report_path: Path,
                 figure_path: Path, command: str, pretrain_seconds: float, wall_seconds: float) -> None:
    s = cfg.seed_study
    _figure(scores, figure_path)
    sc, ar, seg, gr = cfg.scrc, cfg.attention_regression, cfg.text_objseg, cfg.grn
    datasets, inputs = study_datasets(cfg), []
    if "scrc" in s.models:
        inputs.append(ModelInput("SCRC CNNs", sc.backbone, sc.pretrained, f"{sc.image_size} px, crops {sc.crop_size} px"))
    if "attention_regression" in s.models:
        inputs.append(ModelInput("attention regression", ar.backbone, ar.pretrained, f"{ar.image_size} px",
                                 "frozen" if ar.freeze_backbone else "trained"))
    if "text_objseg" in s.models:
        inputs.append(ModelInput("segmentation model", seg.backbone, seg.pretrained, f"{seg.input_size} px",
                                 f"conv layers {'fixed' if seg.freeze_conv else 'trained'}"))
    if "grn" in s.models:
        inputs.append(ModelInput("GRN region features", gr.backbone, gr.pretrained, f"{gr.image_size} px", "frozen"))
    if "vision_text_only" in s.models:
        inputs.append(ModelInput("vision-only/text-only LSTM-CNN and category FCN", seg.backbone, seg.pretrained,
                                 f"{seg.input_size} px", f"conv layers {'fixed' if seg.freeze_conv else 'trained'}"))
    reports = ", ".join(f"{REPORT_NAMES.get(m, m)}.md" for m in s.models)
    lines = ["# Training-seed study", "",
             *run_summary(cfg, datasets, inputs),
             f"Reproduce: `{command}` (not part of the embedded `dvc repro`: it retrains every variant "
             f"{len(s.seeds)} times).", "",
             f"Every variant of {', '.join(f'`{m}`' for m in s.models)} retrained and re-evaluated at seeds "
             f"{', '.join(str(x) for x in s.seeds)} with the pipeline's params; only `run.seed` changes. The seed "
             "sets the initial weights, the batch order and dropout, and draws the scarce-data training subset "
             "and the R@K query subset. The test set is the same at every seed."
             + (" Segmentation rows are `<variant>_lowres` and `<variant>_highres`; each seed's high-resolution "
                "model starts from that seed's low-resolution one." if "text_objseg" in s.models else "")
             + (" Vision-only/text-only rows are its LSTM-CNN variants (each the high-resolution model, trained "
                "from that seed's low-resolution one) and, per dataset with classes, `<dataset>_category` (the "
                "category FCN, trained once per seed on COCO, with the dataset's expression classifier) and "
                "`<dataset>_full` (the fused model, from that seed's models), each scored on its dataset's first "
                "evaluation split (G-Ref: val, as the paper)." if "vision_text_only" in s.models else ""), "",
             f"The model reports ({reports}) judge each claim against test-set noise for "
             "one seed (paired bootstrap over test images). Here a claim is judged against training-seed noise: "
             "the mean gap over seeds, with the paired t 95% interval over seeds (scipy.stats.ttest_rel); and at "
             "each seed, whether the gap is beyond that seed's test noise (paired bootstrap resampling the test "
             "images with all their queries, 95%). With few seeds the interval is wide; 'not resolved' means the "
             "seeds disagree or the gap is small beside their spread.", ""]
    for model in s.models:
        part = scores[scores["model"] == model]
        if part.empty:
            continue
        lines += [f"## {TITLES[model]}", "", *_markdown(_score_table(part, model, cfg))]
        kinds = _kind_table(part)
        if kinds is not None:
            what = ("on the novel-word subset (the evaluation expressions with a word no training expression has)"
                    if model == "vision_text_only" else "per expression kind and target size")
            lines += [f"Mean over seeds, {what}:", "", *_markdown(kinds)]
        table = claim_tables.get(model)
        if table is not None and not table.empty:
            lines += ["The paper's claims over training seeds (differences in points):", "", *_markdown(table)]
    train = scores.groupby("model", sort=False)["train_seconds"].sum()
    evaluation = scores.groupby("model", sort=False)["eval_seconds"].sum()
    lines += ["## Scores per seed", "", f"![scores per seed]({figure_path.relative_to(report_path.parent).as_posix()})", ""]
    lines += ["## Cost", "", "On this CPU, summed over seeds: training "
              + ", ".join(f"{m} {v / 60:.1f} min" for m, v in train.items())
              + (f" (+ SCRC caption pretraining {pretrain_seconds / 60:.1f} min)" if pretrain_seconds else "")
              + "; evaluation " + ", ".join(f"{m} {v / 60:.1f} min" for m, v in evaluation.items())
              + ". Training times are the engine's over each whole run (a rerun resumes finished runs from their "
              f"checkpoints); data loading and feature caching come on top. This invocation: {wall_seconds / 60:.1f} min "
              f"wall with {min(s.workers, len(s.seeds))} worker process(es).", ""]
    shared = [name for m in s.models for name in SHARED_SECTIONS.get(m, {}) if name not in s.models]
    lines += provenance(cfg, ("seed_study", "datasets", "pretrain_backbone", *s.models, *dict.fromkeys(shared),
                              "training"))
    write_text(report_path, "\n".join(lines))
