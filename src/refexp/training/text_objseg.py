"""Recipe of the segmentation paper (refexp.models.text_objseg): two-stage training and mask evaluation.

- low resolution: no deconvolution; labels downsampled to the w x h map (a cell is positive if any of its
  pixels is); foreground : background loss weights 1 : 1 (params);
- high resolution: initialised from the low-resolution model of the same variant, the bilinear
  deconvolution added, trained on full-size labels with weights 3 : 1 (the code's 1 and 1/3);
- weight decay on weights only, as the released code adds it: a loss term wd * sum(w^2) / 2;
- evaluation: the score map (the low-resolution model's coarse map bilinearly upsampled first) mapped
  back to each image's original size (data/letterbox.py), thresholded at 0, then scored against the
  ground-truth mask at that size (metrics/masks.py). Rows without a mask are counted, never scored.

Images and labels are held in memory as uint8 at the input size (the embedded world's are small).
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
from PIL import Image
from torch.utils.data import Dataset

from refexp.artifacts import save_torch
from refexp.config import Config, TextObjSegConfig, TextObjSegModelConfig
from refexp.data.coco import decode_rle
from refexp.data.letterbox import Letterbox, any_positive_downsample
from refexp.data.skips import DataError
from refexp.metrics.masks import per_query_counts, segmentation_metrics
from refexp.models.text_objseg import SmallFcnMap, TextObjSeg, VggFc8Map, decay_groups, weighted_logistic_loss
from refexp.paths import Paths
from refexp.text.vocab import Vocab
from refexp.training.attention_regression import read_prepared, split_rows
from refexp.training.engine import fit, run_key
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

RESOLUTIONS = ("lowres", "highres")
STAGE = {"lowres": "train_text_objseg_lowres", "highres": "train_text_objseg_highres"}
MODEL_FILE = "model.pt"  # the trained weights alone (deterministic bytes; the checkpoint also holds timings)


def model_dir(paths: Paths, resolution: str, variant: str) -> Path:
    return paths.model_dir(f"text_objseg_{resolution}", variant)


# ---------------------------------------------------------------- data


@dataclass
class SegmentationExamples(Dataset):
    """One row per (image, expression, mask): letterboxed images, tokens, and labels at the model's output size."""

    images: torch.Tensor  # (N_img, 3, S, S) uint8
    image_index: torch.Tensor  # (N,) row -> image
    tokens: torch.Tensor  # (N, T) ids, 0 = pad
    lengths: torch.Tensor  # (N,)
    labels: torch.Tensor | None  # (N, S, S) or (N, S/s, S/s) uint8; None at evaluation
    letterboxes: list[Letterbox]  # per image
    no_known_word: int = 0  # expressions whose every word is <unk>
    body_maps: torch.Tensor | None = None  # (N_img, C, h, w): the fixed conv body's output, when cached
    regions: np.ndarray | None = None  # (N,) row -> its region (an int code), to group distinct regions

    def __len__(self) -> int:
        return len(self.image_index)

    @torch.no_grad()
    def cache_body_maps(self, image_net, batch_size: int = 32) -> None:
        """image_net: a VggFc8Map or SmallFcnMap (its fixed conv body runs once per image)."""
        from refexp.training.engine import pick_device

        device = pick_device()  # the maps stay on the CPU: batches move them, like images
        body = image_net.conv_body()
        was_training = body.training
        image_net.to(device)
        body.eval()
        self.body_maps = torch.cat([image_net.body(self.images[i:i + batch_size].to(device).float() / 255.0).cpu()
                                    for i in range(0, len(self.images), batch_size)])
        body.train(was_training)
        log.info("cached the fixed conv body's maps: %s (%.1f MB)", tuple(self.body_maps.shape),
                 self.body_maps.numel() * 4 / 1e6)

    def __getitem__(self, i: int) -> dict:
        image = self.image_index[i]
        item = {"tokens": self.tokens[i], "length": self.lengths[i]}
        if self.body_maps is not None:
            item["body_map"] = self.body_maps[image]
        else:
            item["image"] = self.images[image]
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


GROUP_STREAM = 37  # second key of the generator that groups each image's expressions


@dataclass
class ImageGroups(Dataset):
    """Training items of up to k expressions of one image (text_objseg.expressions_per_image): a batch of
    G items holds G images, so the image side runs once per image (collate_groups, TextObjSeg image_of).
    Each image's rows are shuffled once by a seeded generator, dealt so that a group holds distinct
    regions where the image has enough (every region's r-th expression before any region's (r+1)-th: the
    refer datasets give each region ~2 paraphrases, which would otherwise share groups), and cut into
    groups of k; the engine's seeded epoch order then shuffles the groups."""

    examples: SegmentationExamples
    groups: list[torch.Tensor]  # row indices of examples, all of one image

    @classmethod
    def of(cls, examples: SegmentationExamples, k: int, seed: int) -> "ImageGroups":
        rng = np.random.default_rng([seed, GROUP_STREAM])
        order = np.argsort(examples.image_index.numpy(), kind="stable")
        starts = np.searchsorted(examples.image_index.numpy()[order], np.arange(len(examples.images) + 1))
        groups = []
        for image in range(len(examples.images)):
            rows = rng.permutation(order[starts[image]:starts[image + 1]])
            if examples.regions is not None:
                region = examples.regions[rows]
                rank = pd.Series(region).groupby(region).cumcount().to_numpy()  # r: the region's r-th row here
                rows = rows[np.argsort(rank, kind="stable")]
            groups += [torch.from_numpy(rows[i:i + k]) for i in range(0, len(rows), k)]
        return cls(examples, groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict:
        rows, ex = self.groups[i], self.examples
        image = ex.image_index[rows[0]]
        item = {"tokens": ex.tokens[rows], "length": ex.lengths[rows]}  # (k, T), (k,)
        if ex.body_maps is not None:
            item["body_map"] = ex.body_maps[image]
        else:
            item["image"] = ex.images[image]
        if ex.labels is not None:
            item["label"] = ex.labels[rows]  # (k, h, w) or (k, S, S)
        return item


def collate_groups(items: list[dict]) -> dict:
    """ImageGroups items -> a batch of B expressions on G images: image_of (B,) names each one's image."""
    width = max(int(it["length"].max()) for it in items)
    counts = torch.tensor([len(it["length"]) for it in items])
    batch = {"tokens": torch.cat([it["tokens"][:, :width] for it in items]),  # (B, T)
             "lengths": torch.cat([it["length"] for it in items]),  # (B,)
             "image_of": torch.repeat_interleave(torch.arange(len(items)), counts)}  # (B,) in [0, G)
    if "label" in items[0]:
        batch["labels"] = torch.cat([it["label"] for it in items])  # (B, h, w) or (B, S, S)
    return batch | image_side(items)


def image_side(items: list[dict]) -> dict:
    """The items' images (G, 3, S, S) in [0, 1], or their fixed conv body's maps (G, C, h, w)."""
    if "body_map" in items[0]:
        return {"body_maps": torch.stack([it["body_map"] for it in items])}
    return {"images": torch.stack([it["image"] for it in items]).float().div_(255.0)}


def training_items(examples: SegmentationExamples, expressions_per_image: int, seed: int):
    """(dataset, collate_fn) of a training run: ImageGroups of up to expressions_per_image expressions
    with collate_groups, or (1) one expression per item, the released code's batching."""
    if expressions_per_image > 1:
        return ImageGroups.of(examples, expressions_per_image, seed), collate_groups
    return examples, collate


def encode_tokens(token_lists, vocab: Vocab, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(N, T) ids, (N,) lengths and how many expressions have no word the vocabulary knows."""
    ids = [vocab.encode(list(t))[:max_tokens] for t in token_lists]
    unknown = sum(all(i == vocab.unk_id for i in seq) for seq in ids)
    ids = [seq or [vocab.unk_id] for seq in ids]
    tokens = torch.zeros(len(ids), max(1, max(map(len, ids), default=1)), dtype=torch.long)
    for row, seq in enumerate(ids):
        tokens[row, :len(seq)] = torch.tensor(seq)
    return tokens, torch.tensor([len(s) for s in ids]), unknown


def with_masks(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, int]:
    """Rows that have a mask, and how many were set aside without one (counted in the metrics)."""
    has = df["mask_rle"].notna()
    if not has.any():
        raise DataError(path, "no row has a mask (mask_rle): the layout has no masks to segment")
    return df[has].reset_index(drop=True), int((~has).sum())


def letterboxed_image(root: Path, rel: str, size: int) -> tuple[np.ndarray, Letterbox]:
    """The image at root/rel resized and padded to size x size (uint8 H x W x 3), and its letterbox."""
    path = Path(root) / rel
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except OSError as err:
        raise DataError(path, f"cannot read image ({err})") from None
    box = Letterbox.fit(rgb.shape[1], rgb.shape[0], size, size)
    return box.image(rgb), box


def train_splits(train_split: str) -> tuple[str, ...]:
    """The splits a training split names: trainval is train and val."""
    return ("train", "val") if train_split == "trainval" else (train_split,)


def build_examples(df: pd.DataFrame, vocab: Vocab, root: Path, size: int, max_tokens: int,
                   label_stride: int | None) -> SegmentationExamples:
    """label_stride: None = no labels (evaluation), 1 = full size, s = the low-res map's cells."""
    unique = list(dict.fromkeys(df["image_path"]))
    if any(p is None or p is pd.NA for p in unique):
        raise DataError("tuples.parquet", "rows without an image file (kept_with_defect/image_missing); "
                        "segmentation reads images")
    images = torch.empty((len(unique), 3, size, size), dtype=torch.uint8)
    boxes: list[Letterbox] = []
    for i, rel in enumerate(unique):
        pixels, box = letterboxed_image(root, rel, size)
        images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
        boxes.append(box)
    index = {p: i for i, p in enumerate(unique)}
    image_index = torch.tensor([index[p] for p in df["image_path"]], dtype=torch.long)
    tokens, lengths, unknown = encode_tokens(df["tokens"], vocab, max_tokens)
    labels = None
    if label_stride is not None:
        out = size // label_stride
        labels = torch.empty((len(df), out, out), dtype=torch.uint8)
        for row, r in enumerate(df.itertuples()):
            mask = decode_rle(r.mask_rle, int(r.image_height), int(r.image_width))
            full = boxes[image_index[row]].mask(mask)
            labels[row] = torch.from_numpy(any_positive_downsample(full, label_stride) if label_stride > 1 else full)
    regions = pd.factorize(pd.MultiIndex.from_arrays([df["image_path"], df["region_id"]]))[0] if "region_id" in df else None
    return SegmentationExamples(images, image_index, tokens, lengths, labels, boxes, unknown, regions=regions)


def collate(items: list[dict]) -> dict:
    width = max(int(it["length"]) for it in items)
    batch = {"tokens": torch.stack([it["tokens"][:width] for it in items]),  # (B, T)
             "lengths": torch.stack([it["length"] for it in items])}  # (B,)
    if "label" in items[0]:
        batch["labels"] = torch.stack([it["label"] for it in items])  # (B, h, w) or (B, S, S)
    return batch | image_side(items)


# ---------------------------------------------------------------- model


def build_image_net(section: TextObjSegConfig, feature_dim: int, paths: Paths):
    """VGG-16 to fc8, or the small backbone's map and its 1x1 "fc" head (Dim = feature_dim)."""
    if section.backbone == "vgg16":
        image_net = VggFc8Map(section.pretrained)
    else:
        image_net = SmallFcnMap(section.backbone, section.pretrained, feature_dim,
                                paths.backbone_weights(section.backbone, section.pretrained))
    if section.input_size % image_net.stride:
        raise DataError("params.yaml", f"text_objseg.input_size {section.input_size} is not a multiple of the "
                        f"{section.backbone} stride {image_net.stride}")
    return image_net


def build(section: TextObjSegConfig, variant: str, vocab_size: int, resolution: str, paths: Paths) -> TextObjSeg:
    return build_model(section, section.variant_model(variant), vocab_size, resolution, paths)


def build_model(section: TextObjSegConfig, m: TextObjSegModelConfig, vocab_size: int, resolution: str, paths: Paths,
                embeddings: torch.Tensor | None = None, freeze_embeddings: bool = False) -> TextObjSeg:
    """The model of `m` on the section's image side; `embeddings` (vocab, embed_dim) fill the word
    embedding matrix, fixed when `freeze_embeddings` (the vision-only/text-only paper's GloVe)."""
    return TextObjSeg(build_image_net(section, m.feature_dim, paths), vocab_size, m.embed_dim, m.text_hidden,
                      m.classifier_hidden, m.spatial, upsample=resolution == "highres", embeddings=embeddings,
                      freeze_embeddings=freeze_embeddings, freeze_conv=section.freeze_conv)


def make_loss_fn(model: TextObjSeg, weights: tuple[float, float], weight_decay: float):
    decayed = decay_groups(model, weight_decay)[0]["params"]  # chosen once, not on every step

    def loss_fn(model: TextObjSeg, batch: dict):
        scores = model(batch.get("images"), batch["tokens"], batch["lengths"], batch.get("body_maps"),
                       batch.get("image_of"))[:, 0]  # (B, h, w) or (B, S, S)
        cls = weighted_logistic_loss(scores, batch["labels"], *weights)
        decay = sum((p.float() ** 2).sum() for p in decayed)
        loss = cls + 0.5 * weight_decay * decay
        with torch.no_grad():
            correct = ((scores > 0) == batch["labels"].bool()).float()
        return loss, {"loss/logistic": float(cls.detach()), "train/pixel_accuracy": float(correct.mean())}
    return loss_fn


def seg_run_key(cfg: Config, variant: str, resolution: str, files: list[Path]) -> str:
    s = cfg.text_objseg
    return seg_key(s, {"dataset": s.dataset, "train_split": s.train_split,
                       "model": s.variant_model(variant).model_dump()}, resolution, files, [sys.modules[__name__]])


def seg_key(s: TextObjSegConfig, run: dict, resolution: str, files: list[Path], modules: list) -> str:
    """The fingerprint of one LSTM-CNN training: the section's image side and recipe, the run's own
    params (`run`: dataset, split, model, ...), the data files and the code."""
    import refexp.data.letterbox
    import refexp.models.backbones
    import refexp.models.text_objseg

    params = {**s.model_dump(include={"backbone", "pretrained", "freeze_conv", "cache_frozen_features", "input_size",
                                      "expressions_per_image",
                                      "weight_decay", f"{resolution}_loss_weights"}),
              **run, "resolution": resolution}
    return run_key(files, [refexp.models.text_objseg, refexp.models.backbones, refexp.data.letterbox,
                           sys.modules[__name__], *modules], params)


def training_rows(cfg: Config, paths: Paths) -> tuple[pd.DataFrame, Vocab, int]:
    """The train split's (or trainval's) rows with a mask, the vocabulary, and how many rows had no mask."""
    s = cfg.text_objseg
    df, vocab = read_prepared(paths, s.dataset)
    rows, no_mask = split_with_masks(df, s.train_split, paths.tuples(s.dataset))
    return rows, vocab, no_mask


def split_with_masks(df: pd.DataFrame, train_split: str, path: Path) -> tuple[pd.DataFrame, int]:
    """The rows of `train_split` (trainval: train and val) that have a mask, and how many had none."""
    part = df[df["split"].isin(train_splits(train_split))].reset_index(drop=True)
    if part.empty:
        raise DataError(path, f"no {train_split} tuples")
    return with_masks(part, path)


def train(cfg: Config, paths: Paths, variant: str, resolution: str, progress: bool = True) -> dict:
    s = cfg.text_objseg
    train_rows, vocab, no_mask = training_rows(cfg, paths)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model = build(s, variant, len(vocab), resolution, paths)
    files = [paths.tuples(s.dataset), paths.vocab(s.dataset)]
    training = cfg.training.merged(s.lowres_training if resolution == "lowres" else s.highres_training,
                                   f"text_objseg.{resolution}_training")
    return fit_resolution(cfg, paths, model, train_rows, vocab, resolution, training,
                          model_dir(paths, "lowres", variant), model_dir(paths, resolution, variant),
                          paths.plots(STAGE[resolution], variant), s.variant_model(variant).max_tokens,
                          lambda files: seg_run_key(cfg, variant, resolution, files), files, no_mask,
                          f"train_text_objseg_lowres {variant}", progress)


def fit_resolution(cfg: Config, paths: Paths, model: TextObjSeg, train_rows: pd.DataFrame, vocab: Vocab,
                   resolution: str, training, lowres_dir: Path, out_dir: Path, curve_path: Path, max_tokens: int,
                   key_of, files: list[Path], no_mask: int, lowres_stage: str, progress: bool = True) -> dict:
    """One resolution's training of `model` on `train_rows` (the high-res model starts from lowres_dir's
    weights, trained by `lowres_stage`), checkpointed in out_dir; key_of(files) is the run's fingerprint."""
    s = cfg.text_objseg
    weights = paths.backbone_weights(s.backbone, s.pretrained)
    files = files + ([weights] if weights else [])
    if resolution == "highres":
        init = lowres_dir / MODEL_FILE
        if not init.exists():
            raise DataError(init, f"missing; run {lowres_stage} first (high resolution starts from it)")
        missing, unexpected = model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True), strict=False)
        if unexpected or any(not k.startswith("upsample.") for k in missing):
            raise DataError(init, f"not a low-resolution model of this variant (missing {missing}, unexpected {unexpected})")
        files.append(init)
    examples = build_examples(train_rows, vocab, paths.root, s.input_size, max_tokens,
                              1 if resolution == "highres" else model.stride)
    if s.cache_frozen_features:
        examples.cache_body_maps(model.image_net)
    weights_fb = s.lowres_loss_weights if resolution == "lowres" else s.highres_loss_weights
    dataset, collate_fn = training_items(examples, s.expressions_per_image, cfg.run.seed)
    metrics = fit(model, dataset, make_loss_fn(model, weights_fb, s.weight_decay), training, out_dir,
                  seed=cfg.run.seed, collate_fn=collate_fn, curve_path=curve_path,
                  deterministic=cfg.run.deterministic, progress=progress, run_key=key_of(files))
    if not metrics.get("train/stopped_early"):
        save_torch(model.state_dict(), out_dir / MODEL_FILE)
    metrics.update({"train/tuples": len(examples), "train/images": len(examples.images),
                    "train/skipped_without_mask": no_mask,
                    "train/foreground_fraction": float(examples.labels.float().mean())})
    return metrics


# ---------------------------------------------------------------- evaluation


def load_trained(cfg: Config, paths: Paths, variant: str, resolution: str, vocab: Vocab) -> TextObjSeg:
    weights = model_dir(paths, resolution, variant) / MODEL_FILE
    if not weights.exists():
        raise DataError(weights, f"missing; run {STAGE[resolution]} {variant} first")
    model = build(cfg.text_objseg, variant, len(vocab), resolution, paths)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    from refexp.training.engine import pick_device

    return model.eval().to(pick_device())  # evaluation batched on CUDA when present


@torch.no_grad()
def predict_scores(model: TextObjSeg, examples: SegmentationExamples, batch_size: int) -> list[np.ndarray]:
    """Per row, the (S, S) score map at the input size (a low-res map bilinearly upsampled)."""
    from refexp.training.engine import to_device

    device = next(model.parameters()).device
    size = examples.images.shape[-2:]
    out: list[np.ndarray] = []
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate([examples[i] for i in range(start, min(start + batch_size, len(examples)))]), device)
        scores = model(batch.get("images"), batch["tokens"], batch["lengths"], batch.get("body_maps"))
        if scores.shape[-2:] != size:  # (B, 1, h, w) -> (B, 1, S, S)
            scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        out += list(scores[:, 0].float().cpu().numpy())
    return out


def evaluate(cfg: Config, paths: Paths, variant: str, resolution: str, split: str = "test"
             ) -> tuple[dict, pd.DataFrame]:
    """Test metrics (test/prec_at_*, test/overall_iou, test/mean_iou) and per-query IoUs for the report."""
    s = cfg.text_objseg
    df, vocab = read_prepared(paths, s.dataset)
    rows, no_mask = with_masks(split_rows(df, split, paths.tuples(s.dataset)), paths.tuples(s.dataset))
    model = load_trained(cfg, paths, variant, resolution, vocab)
    examples = build_examples(rows, vocab, paths.root, s.input_size, s.variant_model(variant).max_tokens, None)
    started = time.perf_counter()  # ms/query from pixels: the body runs on every test image here
    scores = predict_scores(model, examples, s.eval_batch_size)
    seconds = time.perf_counter() - started
    preds, truths = [], []
    for row, r in enumerate(rows.itertuples()):
        preds.append(examples.letterboxes[examples.image_index[row]].restore(scores[row]) > 0)
        truths.append(decode_rle(r.mask_rle, int(r.image_height), int(r.image_width)))
    metrics, table = _scored(rows, preds, truths, split, no_mask)
    metrics.update({f"{split}/no_known_word": examples.no_known_word, f"{split}/ms_per_query": 1000 * seconds / len(rows)})
    return metrics, table


def _scored(rows: pd.DataFrame, preds: list[np.ndarray], truths: list[np.ndarray], split: str,
            no_mask: int) -> tuple[dict, pd.DataFrame]:
    metrics = {f"{split}/{k}": v for k, v in segmentation_metrics(preds, truths).items()}
    metrics.update({f"{split}/queries": len(rows), f"{split}/skipped_without_mask": no_mask})
    table = rows[["image_id", "image_path", "region_id", "expression", "kind"]].copy()
    table["intersection"], table["union"] = per_query_counts(preds, truths)  # overall IoU's parts, per query
    table["iou"] = table["intersection"] / table["union"]
    table["predicted_pixels"] = [int(p.sum()) for p in preds]
    table["true_pixels"] = [int(t.sum()) for t in truths]
    return metrics, table
