"""Table 1's baselines of the segmentation paper (Sec. 4.1), on the model's test queries and metrics.

Trained parts (stage train_text_objseg_baseline, one each; the same train split and fixed conv body as
the model, refexp.training.text_objseg):
- `per_word`: one FCN whose N outputs are the N most frequent training words minus stop words, each a
  per-pixel logistic output; trained on the low-resolution labels (a pixel of the referred region carries
  its expression's words, every other pixel none), its maps bilinearly upsampled at test;
- `grounder`: supervised GroundeR, re-implemented: softmax attention over the image's box proposals,
  conditioned on the LSTM-encoded phrase, trained with cross-entropy towards the proposal that best
  overlaps the ground-truth box;
- `proposal_classifier`: the same network over segmentation proposals (stage propose_masks, the MCG
  substitute of refexp.data.mask_proposals), each proposal classified foreground (mask IoU with the
  truth >= positive_iou) or background with a logistic loss.

Rows (stage evaluate_text_objseg_baseline, a `text_objseg.baselines` entry each): whole image; per-word
average / intersection / union; SCRC (the trained `text_objseg.scrc_variant`) and GroundeR, each as its
top proposal's rectangle or GrabCut's foreground in it; the top segmentation proposal.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from refexp.artifacts import save_torch, write_json
from refexp.config import Config, SegmentationBaseline, TextObjSegConfig
from refexp.data.coco import decode_rle
from refexp.data.mask_proposals import box_mask, grabcut_from_box, segment_proposals
from refexp.data.proposals import proposals_for_images
from refexp.data.skips import DataError
from refexp.models.text_objseg import (
    PerWordFcn,
    ProposalScorer,
    box_spatial,
    combine_word_scores,
    per_word_labels,
    pooled_proposal_features,
)
from refexp.paths import Paths
from refexp.text.vocab import Vocab
from refexp.training import text_objseg
from refexp.training.attention_regression import read_prepared, split_rows
from refexp.training.engine import fit, pick_device, run_key
from refexp.training.seed import seed_everything

log = logging.getLogger(__name__)

TRAINED = ("per_word", "grounder", "proposal_classifier")
TRAIN_STAGE = "train_text_objseg_baseline"
MASK_STAGE = "propose_masks"
MODEL_FILE = text_objseg.MODEL_FILE
WORDS_FILE = "words.json"  # the per-word FCN's N words, in output order


def model_dir(paths: Paths, part: str) -> Path:
    return paths.model_dir("text_objseg_baseline", part)


def mask_proposals_path(paths: Paths, dataset: str) -> Path:
    return paths.stage_dir(MASK_STAGE, dataset) / "proposals.parquet"


# ---------------------------------------------------------------- shared inputs


def _test_rows(cfg: Config, paths: Paths, split: str) -> tuple[pd.DataFrame, Vocab, int]:
    s = cfg.text_objseg
    df, vocab = read_prepared(paths, s.dataset)
    rows, no_mask = text_objseg.with_masks(split_rows(df, split, paths.tuples(s.dataset)), paths.tuples(s.dataset))
    return rows, vocab, no_mask


def _examples(section: TextObjSegConfig, rows: pd.DataFrame, vocab: Vocab, paths: Paths, image_net,
              label_stride: int | None) -> text_objseg.SegmentationExamples:
    """Letterboxed images with the fixed conv body's maps cached (the baselines never train that body)."""
    examples = text_objseg.build_examples(rows, vocab, paths.root, section.input_size, section.model.max_tokens,
                                          label_stride)
    examples.cache_body_maps(image_net)
    return examples


def _input_files(cfg: Config, paths: Paths, part: str) -> list[Path]:
    s = cfg.text_objseg
    files = [paths.tuples(s.dataset), paths.vocab(s.dataset)]
    weights = paths.backbone_weights(s.backbone, s.pretrained)
    files += [weights] if weights else []
    if part == "proposal_classifier":
        files.append(mask_proposals_path(paths, s.dataset))
    return files


def _part_run_key(cfg: Config, part: str, files: list[Path]) -> str:
    import refexp.data.letterbox
    import refexp.models.backbones
    import refexp.models.text_objseg

    s = cfg.text_objseg
    params = {**s.model_dump(include={"dataset", "train_split", "backbone", "pretrained", "input_size", "model",
                                      "n_box_proposals", "mask_proposals"}),
              part: getattr(s, part).model_dump(exclude={"training"})}
    return run_key(files, [refexp.models.text_objseg, refexp.models.backbones, refexp.data.letterbox,
                           text_objseg, sys.modules[__name__]], params)


def mask_proposal_table(cfg: Config, paths: Paths) -> tuple[pd.DataFrame, dict]:
    """Every image of the dataset's segmentation proposals (stage propose_masks): one row per
    (image, rank) with its COCO RLE at the image's size and its inclusive bounding box."""
    s = cfg.text_objseg
    df, _ = read_prepared(paths, s.dataset)
    images = df.drop_duplicates("image_id")
    missing = images["image_path"].isna()
    if missing.any():
        raise DataError(paths.tuples(s.dataset), f"{int(missing.sum())} images without a file "
                        "(kept_with_defect/image_missing); segmentation proposals read images")
    records, started = [], time.perf_counter()
    for r in images.itertuples():
        masks = segment_proposals(_read_rgb(paths.root, r.image_path), s.mask_proposals.count)  # (K, H, W)
        for rank, mask in enumerate(masks):
            ys, xs = np.nonzero(mask)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            records.append({"image_id": str(r.image_id), "rank": rank, "mask_rle": rle["counts"].decode(),
                            "x1": float(xs.min()), "y1": float(ys.min()), "x2": float(xs.max()), "y2": float(ys.max())})
    table = pd.DataFrame.from_records(records, columns=["image_id", "rank", "mask_rle", "x1", "y1", "x2", "y2"])
    per_image = table.groupby("image_id").size().reindex(images["image_id"].astype(str), fill_value=0)
    metrics = {"images": len(images), "proposals": len(table), "proposals_per_image/mean": float(per_image.mean()),
               "proposals_per_image/min": int(per_image.min()), "images_without_proposals": int((per_image == 0).sum()),
               "ms_per_image": 1000 * (time.perf_counter() - started) / max(1, len(images))}
    return table, metrics


# ---------------------------------------------------------------- per-word FCN


def frequent_words(token_lists, n_words: int, stop_words: list[str]) -> list[str]:
    """The n most frequent training words minus the stop words (ties by the word, for determinism)."""
    stop = set(stop_words)
    counts = Counter(w for tokens in token_lists for w in tokens if w not in stop)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_words]]


def word_indicators(token_lists, words: list[str]) -> torch.Tensor:
    """(N_rows, N) bool: word i of the list occurs in the expression."""
    index = {w: i for i, w in enumerate(words)}
    out = torch.zeros(len(token_lists), len(words), dtype=torch.bool)
    for row, tokens in enumerate(token_lists):
        for w in tokens:
            if w in index:
                out[row, index[w]] = True
    return out


class _WithWords(Dataset):
    def __init__(self, examples: text_objseg.SegmentationExamples, words: torch.Tensor):
        self.examples, self.words = examples, words

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return {**self.examples[i], "words": self.words[i]}


def _collate_words(items: list[dict]) -> dict:
    return {**text_objseg.collate(items), "words": torch.stack([it["words"] for it in items])}  # (B, N)


def _per_word_loss_fn(positive_weight: float):
    weight = torch.tensor(positive_weight)

    def loss_fn(model: PerWordFcn, batch: dict):
        scores = model(batch.get("images"), batch.get("body_maps"))  # (B, N, h, w)
        labels = per_word_labels(batch["labels"], batch["words"])  # (B, N, h, w)
        loss = F.binary_cross_entropy_with_logits(scores, labels, pos_weight=weight.to(scores.device))
        with torch.no_grad():
            positive = labels.bool()
            recall = ((scores > 0) & positive).sum() / positive.sum().clamp(min=1)
        return loss, {"loss/logistic": float(loss.detach()), "train/positive_recall": float(recall)}
    return loss_fn


def _build_per_word(cfg: Config, paths: Paths, n_words: int) -> PerWordFcn:
    s = cfg.text_objseg
    return PerWordFcn(text_objseg.build_image_net(s, s.model.feature_dim, paths), n_words, freeze_conv=True)


def train_per_word(cfg: Config, paths: Paths, progress: bool) -> dict:
    s = cfg.text_objseg
    rows, vocab, no_mask = text_objseg.training_rows(cfg, paths)
    words = frequent_words(rows["tokens"], s.per_word.n_words, s.per_word.stop_words)
    if not words:
        raise DataError(paths.tuples(s.dataset), "no training word is left after the stop words")
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    model = _build_per_word(cfg, paths, len(words))
    examples = _examples(s, rows, vocab, paths, model.image_net, model.stride)
    present = word_indicators(rows["tokens"], words)
    out = model_dir(paths, "per_word")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / WORDS_FILE, words)
    files = _input_files(cfg, paths, "per_word")
    training = cfg.training.merged(s.per_word.training, "text_objseg.per_word.training")
    metrics = fit(model, _WithWords(examples, present), _per_word_loss_fn(s.per_word.positive_weight), training, out, seed=cfg.run.seed,
                  collate_fn=_collate_words, curve_path=paths.plots(TRAIN_STAGE, "per_word"),
                  deterministic=cfg.run.deterministic, progress=progress,
                  run_key=_part_run_key(cfg, "per_word", files))
    if not metrics.get("train/stopped_early"):
        save_torch(model.state_dict(), out / MODEL_FILE)
    metrics.update({"train/tuples": len(examples), "train/images": len(examples.images), "train/words": len(words),
                    "train/skipped_without_mask": no_mask,
                    "train/no_listed_word": int((~present.any(1)).sum())})
    return metrics


@torch.no_grad()
def per_word_scores(cfg: Config, paths: Paths, rows: pd.DataFrame, vocab: Vocab, how: str
                    ) -> tuple[list[np.ndarray], int]:
    """Per row, the combined score map at the image's size (foreground > 0), and how many rows have no
    listed word."""
    s = cfg.text_objseg
    weights = model_dir(paths, "per_word") / MODEL_FILE
    if not weights.exists():
        raise DataError(weights, f"missing; run {TRAIN_STAGE} per_word first")
    words = json.loads((model_dir(paths, "per_word") / WORDS_FILE).read_text())
    model = _build_per_word(cfg, paths, len(words))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval().to(pick_device())
    examples = _examples(s, rows, vocab, paths, model.image_net, None)
    present = word_indicators(rows["tokens"], words)
    size = examples.images.shape[-2:]
    maps = []
    for start in range(0, len(examples.images), s.eval_batch_size):  # per image: its N word maps
        body_maps = examples.body_maps[start:start + s.eval_batch_size].to(pick_device())
        scores = model(None, body_maps)  # (b, N, h, w)
        maps.append(F.interpolate(scores, size=size, mode="bilinear", align_corners=False).cpu())  # (b, N, S, S)
    maps = torch.cat(maps)
    out = []
    for row in range(len(rows)):
        image = int(examples.image_index[row])
        combined = combine_word_scores(maps[image:image + 1], present[row:row + 1], how)[0].numpy()  # (S, S)
        out.append(examples.letterboxes[image].restore(combined))  # (h0, w0)
    return out, int((~present.any(1)).sum())


# ---------------------------------------------------------------- proposal scorers (GroundeR, classifier)


def _box_proposals(cfg: Config, paths: Paths, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    s = cfg.text_objseg
    proposals, _ = proposals_for_images(paths.raw(s.dataset), rows, s.n_box_proposals, cfg.run.seed, paths.root)
    return proposals


def _mask_proposals(paths: Paths, dataset: str) -> dict[str, pd.DataFrame]:
    path = mask_proposals_path(paths, dataset)
    if not path.exists():
        raise DataError(path, f"missing; run {MASK_STAGE} first")
    table = pd.read_parquet(path)
    return {str(k): g.sort_values("rank") for k, g in table.groupby("image_id")}


def _boxes_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(K,) IoU of inclusive pixel boxes with one inclusive box."""
    from torchvision.ops import box_iou

    a = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4).clone()
    b = torch.as_tensor(box, dtype=torch.float64).reshape(1, 4).clone()
    a[:, 2:] += 1
    b[:, 2:] += 1
    return box_iou(a, b)[:, 0].numpy()


class ProposalSet:
    """Every image's proposals on the fixed conv body's map: features (N_img, K, Dv), valid (N_img, K),
    and per image its proposals at the original size (boxes (K, 4); RLEs for segmentation proposals)."""

    def __init__(self, features: torch.Tensor, valid: torch.Tensor, boxes: list[np.ndarray],
                 rles: list[list[dict]] | None):
        self.features, self.valid, self.boxes, self.rles = features, valid, boxes, rles


def proposal_set(cfg: Config, paths: Paths, part: str, rows: pd.DataFrame,
                 examples: text_objseg.SegmentationExamples, stride: int) -> ProposalSet:
    s = cfg.text_objseg
    section = getattr(s, part)
    unique = list(dict.fromkeys(rows["image_id"].astype(str)))
    first = rows.drop_duplicates("image_id")
    sizes = {str(r.image_id): (int(r.image_height), int(r.image_width)) for r in first.itertuples()}
    boxes_by_image = _box_proposals(cfg, paths, rows) if part == "grounder" else None
    masks_by_image = _mask_proposals(paths, s.dataset) if part == "proposal_classifier" else None
    feats, boxes, rles = [], [], []
    for i, image_id in enumerate(unique):
        box = examples.letterboxes[i]
        coverage = None
        if boxes_by_image is not None:
            orig = boxes_by_image.get(image_id, np.zeros((0, 4)))
            image_rles = None
        else:
            table = masks_by_image.get(image_id)
            if table is None:
                raise DataError(mask_proposals_path(paths, s.dataset), f"no proposals for image {image_id}")
            orig = table[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
            image_rles = [{"size": [*sizes[image_id]], "counts": c.encode()} for c in table["mask_rle"]]
            full = np.stack([box.mask(decode_rle(c, *sizes[image_id])) for c in table["mask_rle"]])  # (K, S, S)
            coverage = F.avg_pool2d(torch.from_numpy(full).float()[:, None], stride)[:, 0]  # (K, h, w)
        inside = torch.from_numpy(box.boxes(orig)) if len(orig) else torch.zeros(0, 4)
        if len(orig):
            pooled = pooled_proposal_features(examples.body_maps[i], inside, stride, section.roi_size, coverage)
            feats.append(torch.cat([pooled, box_spatial(inside.float(), s.input_size)], 1))  # (K, Dv)
        else:
            feats.append(None)
        boxes.append(orig)
        rles.append(image_rles)
    if all(f is None for f in feats):
        raise DataError(mask_proposals_path(paths, s.dataset) if part == "proposal_classifier" else paths.raw(s.dataset),
                        f"no image of these {len(unique)} has a proposal: {part} has no candidate to score")
    dim = next(f.shape[1] for f in feats if f is not None)
    k_max = max(len(b) for b in boxes)
    features = torch.zeros(len(unique), k_max, dim)
    valid = torch.zeros(len(unique), k_max, dtype=torch.bool)
    for i, f in enumerate(feats):
        if f is not None:
            features[i, :len(f)], valid[i, :len(f)] = f, True
    return ProposalSet(features, valid, boxes, rles if masks_by_image is not None else None)


def proposal_targets(rows: pd.DataFrame, image_index: torch.Tensor, props: ProposalSet, part: str,
                     positive_iou: float) -> tuple[torch.Tensor, float]:
    """GroundeR: (N,) the best-overlapping box proposal per query; the classifier: (N, K) foreground labels.
    And the fraction of queries whose best proposal overlaps the truth by less than 0.5 (IoU)."""
    k_max = props.valid.shape[1]
    best_iou = np.zeros(len(rows))
    if part == "grounder":
        targets = torch.zeros(len(rows), dtype=torch.long)
    else:
        targets = torch.zeros(len(rows), k_max)
    for row, r in enumerate(rows.itertuples()):
        image = int(image_index[row])
        if part == "grounder":
            iou = _boxes_iou(props.boxes[image], np.array([r.x1, r.y1, r.x2, r.y2]))
            targets[row] = int(np.argmax(iou)) if len(iou) else 0
        else:
            truth = {"size": [int(r.image_height), int(r.image_width)], "counts": r.mask_rle.encode()}
            iou = np.asarray(mask_utils.iou(props.rles[image], [truth], [0])).reshape(-1)
            targets[row, :len(iou)] = torch.from_numpy(iou >= positive_iou).float()
        best_iou[row] = iou.max() if len(iou) else 0.0
    return targets, float((best_iou < 0.5).mean())


class _ProposalExamples(Dataset):
    def __init__(self, examples, props: ProposalSet, targets: torch.Tensor):
        self.examples, self.props, self.targets = examples, props, targets

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        image = int(self.examples.image_index[i])
        return {"tokens": self.examples.tokens[i], "length": self.examples.lengths[i],
                "proposals": self.props.features[image], "valid": self.props.valid[image], "target": self.targets[i]}


def _collate_proposals(items: list[dict]) -> dict:
    width = max(int(it["length"]) for it in items)
    return {"tokens": torch.stack([it["tokens"][:width] for it in items]),  # (B, T)
            "lengths": torch.stack([it["length"] for it in items]),  # (B,)
            "proposals": torch.stack([it["proposals"] for it in items]),  # (B, K, Dv)
            "valid": torch.stack([it["valid"] for it in items]),  # (B, K)
            "targets": torch.stack([it["target"] for it in items])}  # (B,) or (B, K)


def _grounder_loss(model: ProposalScorer, batch: dict):
    logits = model(batch["proposals"], batch["valid"], batch["tokens"], batch["lengths"])  # (B, K)
    loss = F.cross_entropy(logits, batch["targets"])
    hit = (logits.argmax(1) == batch["targets"]).float().mean()
    return loss, {"loss/cross_entropy": float(loss.detach()), "train/top1_is_best": float(hit)}


def _classifier_loss(model: ProposalScorer, batch: dict):
    logits = model(batch["proposals"], batch["valid"], batch["tokens"], batch["lengths"])  # (B, K)
    valid = batch["valid"]
    loss = F.binary_cross_entropy_with_logits(logits[valid], batch["targets"][valid])
    top = batch["targets"].gather(1, logits.argmax(1, keepdim=True))[:, 0]
    return loss, {"loss/logistic": float(loss.detach()), "train/top1_positive": float(top.mean())}


def _build_scorer(cfg: Config, part: str, visual_dim: int, vocab_size: int) -> ProposalScorer:
    p = getattr(cfg.text_objseg, part)
    return ProposalScorer(visual_dim, vocab_size, p.embed_dim, p.text_hidden, p.hidden)


def _scorer_inputs(cfg: Config, paths: Paths, part: str, rows: pd.DataFrame, vocab: Vocab, label_stride):
    s = cfg.text_objseg
    image_net = text_objseg.build_image_net(s, s.model.feature_dim, paths)
    examples = _examples(s, rows, vocab, paths, image_net, label_stride)
    return examples, proposal_set(cfg, paths, part, rows, examples, image_net.stride)


def train_scorer(cfg: Config, paths: Paths, part: str, progress: bool) -> dict:
    s = cfg.text_objseg
    rows, vocab, no_mask = text_objseg.training_rows(cfg, paths)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    examples, props = _scorer_inputs(cfg, paths, part, rows, vocab, None)
    targets, best_below = proposal_targets(rows, examples.image_index, props, part, getattr(s, part).positive_iou)
    model = _build_scorer(cfg, part, props.features.shape[-1], len(vocab))
    out = model_dir(paths, part)
    files = _input_files(cfg, paths, part)
    training = cfg.training.merged(getattr(s, part).training, f"text_objseg.{part}.training")
    metrics = fit(model, _ProposalExamples(examples, props, targets),
                  _grounder_loss if part == "grounder" else _classifier_loss, training, out, seed=cfg.run.seed,
                  collate_fn=_collate_proposals, curve_path=paths.plots(TRAIN_STAGE, part),
                  deterministic=cfg.run.deterministic, progress=progress, run_key=_part_run_key(cfg, part, files))
    if not metrics.get("train/stopped_early"):
        save_torch(model.state_dict(), out / MODEL_FILE)
    metrics.update({"train/tuples": len(examples), "train/images": len(examples.images),
                    "train/skipped_without_mask": no_mask, "train/proposals_per_image": float(props.valid.sum(1).float().mean()),
                    "train/best_proposal_below_0.5": best_below})
    if part == "proposal_classifier":
        metrics["train/positive_fraction"] = float(targets[props.valid[examples.image_index]].mean())
    return metrics


def train(cfg: Config, paths: Paths, part: str, progress: bool = True) -> dict:
    if part not in TRAINED:
        raise DataError("dvc.yaml", f"{TRAIN_STAGE}: no trained baseline '{part}' (have {list(TRAINED)})")
    return train_per_word(cfg, paths, progress) if part == "per_word" else train_scorer(cfg, paths, part, progress)


@torch.no_grad()
def top_proposals(cfg: Config, paths: Paths, part: str, rows: pd.DataFrame, vocab: Vocab
                  ) -> tuple[list[int], ProposalSet, torch.Tensor]:
    """Per row, the index of its image's top-scoring proposal (-1: the image has none)."""
    weights = model_dir(paths, part) / MODEL_FILE
    if not weights.exists():
        raise DataError(weights, f"missing; run {TRAIN_STAGE} {part} first")
    examples, props = _scorer_inputs(cfg, paths, part, rows, vocab, None)
    model = _build_scorer(cfg, part, props.features.shape[-1], len(vocab))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    device = pick_device()
    model.eval().to(device)
    best = []
    batch = cfg.text_objseg.eval_batch_size
    for start in range(0, len(rows), batch):
        index = examples.image_index[start:start + batch]
        logits = model(props.features[index].to(device), props.valid[index].to(device),
                       examples.tokens[start:start + batch].to(device), examples.lengths[start:start + batch])  # (b, K)
        top = logits.argmax(1).cpu()
        best += [int(t) if bool(props.valid[i].any()) else -1 for t, i in zip(top, index)]
    return best, props, examples.image_index


# ---------------------------------------------------------------- evaluation of a Table 1 row


def _read_rgb(root: Path, rel: str) -> np.ndarray:
    from PIL import Image

    path = Path(root) / rel
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as err:
        raise DataError(path, f"cannot read image ({err})") from None


def box_predictions(cfg: Config, paths: Paths, rows: pd.DataFrame, boxes: list[np.ndarray | None],
                    output: str) -> tuple[list[np.ndarray], dict]:
    """Each row's box as its rectangle, or GrabCut's foreground in it (computed once per image and box);
    a row without a box predicts nothing. Counted: rows without a box, GrabCut's outcomes (its fallbacks
    to the rectangle among them)."""
    keys = [None if box is None else (r.image_path, tuple(np.round(box, 3))) for r, box in zip(rows.itertuples(), boxes)]
    sizes = {r.image_path: (int(r.image_height), int(r.image_width)) for r in rows.itertuples()}
    distinct = {key: box for key, box in zip(keys, boxes) if key is not None}
    outcomes: Counter = Counter()
    if output == "bbox":
        cache = {key: box_mask(*sizes[key[0]], box) for key, box in distinct.items()}
    else:
        images = {path: _read_rgb(paths.root, path) for path in dict.fromkeys(k[0] for k in distinct)}

        def cut(item):
            key, box = item
            return key, grabcut_from_box(images[key[0]], box, cfg.text_objseg.grabcut_iterations)

        # OpenCV releases the GIL and its RNG is per thread (seeded in grabcut_from_box): the same masks
        # as one after another (tests), on every core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = dict(pool.map(cut, distinct.items()))
        cache = {key: result.mask for key, result in results.items()}
        outcomes.update(result.outcome for result in results.values())
    preds = [np.zeros(sizes[r.image_path], dtype=bool) if key is None else cache[key]
             for r, key in zip(rows.itertuples(), keys)]
    counts = {"no_box": sum(b is None for b in boxes), "distinct_boxes": len(cache)}
    counts.update({f"grabcut/{k}": v for k, v in sorted(outcomes.items())})
    return preds, counts


def evaluate(cfg: Config, paths: Paths, name: str, split: str = "test") -> tuple[dict, pd.DataFrame]:
    """A Table 1 row on the model's test queries (same rows, same order, same metrics)."""
    s = cfg.text_objseg
    if name not in s.baselines:
        raise DataError("params.yaml", f"text_objseg.baselines: no baseline '{name}' (have {sorted(s.baselines)})")
    baseline: SegmentationBaseline = s.baselines[name]
    rows, vocab, no_mask = _test_rows(cfg, paths, split)
    truths = [decode_rle(r.mask_rle, int(r.image_height), int(r.image_width)) for r in rows.itertuples()]
    extra: dict = {}
    started = time.perf_counter()
    if baseline.kind == "whole_image":
        preds = [np.ones_like(t) for t in truths]
    elif baseline.kind == "per_word":
        scores, extra["no_known_word"] = per_word_scores(cfg, paths, rows, vocab, baseline.combine)
        preds = [m > 0 for m in scores]
    elif baseline.kind == "proposal_classification":
        best, props, image_index = top_proposals(cfg, paths, "proposal_classifier", rows, vocab)
        preds = []
        for row, (r, k) in enumerate(zip(rows.itertuples(), best)):
            h, w = int(r.image_height), int(r.image_width)
            preds.append(mask_utils.decode(props.rles[int(image_index[row])][k]).astype(bool) if k >= 0
                         else np.zeros((h, w), dtype=bool))
        extra["no_proposal"] = sum(k < 0 for k in best)
    else:
        if baseline.kind == "grounder":
            best, props, image_index = top_proposals(cfg, paths, "grounder", rows, vocab)
            boxes = [props.boxes[int(image_index[row])][k] if k >= 0 else None for row, k in enumerate(best)]
        else:
            from refexp.training import scrc

            boxes = scrc.top_boxes(cfg, paths, s.scrc_variant, rows, _box_proposals(cfg, paths, rows))
        preds, counts = box_predictions(cfg, paths, rows, boxes, baseline.output)
        extra.update(counts)
    seconds = time.perf_counter() - started
    metrics, table = text_objseg._scored(rows, preds, truths, split, no_mask)
    metrics.update({f"{split}/{k}": v for k, v in extra.items()})
    metrics[f"{split}/ms_per_query"] = 1000 * seconds / max(1, len(rows))
    return metrics, table

