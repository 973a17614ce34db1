"""Ground one expression in one image with a trained variant (`refexp ground`; the CLI is refexp.cli).

- `trained_variants(cfg, paths)` / `all_variants(cfg, paths)`: the variants params defines, named
  `<model>/<variant>` as they sit under models/ (`scrc/scrc_full`, `attention_regression/attention_full`,
  `text_objseg_lowres/text_objseg`, `text_objseg_highres/paper_spatial`).
- `ground(cfg, paths, name, image, expression, top)`: the prediction, through the evaluation's own code:
  - SCRC (`kind: proposals`): selective search on the image, seeded by the file's stem as the pipeline
    seeds by image id (what it computes for an image without a proposal file), each proposal scored by
    `training.scrc.candidate_log_likelihoods` (the expression's summed log-likelihood, Eq. 7);
  - attention regression (`kind: box`): `training.attention_regression.predict` on the image; a
    regression has no likelihood, so beside the box comes the share of its image attention inside it;
  - segmentation (`kind: mask`): `training.text_objseg.predict_scores`, mapped back to the image's size
    and thresholded at 0 as `text_objseg.evaluate` does; the mask as COCO RLE.
- `render(grounding, image, out)`: a PNG of the image, the expression and the box, proposals or mask.

A variant whose checkpoint was written for other params, data or code (its fingerprint is not the one the
engine would compute now, so `fit` would not resume it either) is refused with a `GroundingError`.
Runs on CUDA when present.
"""
from __future__ import annotations

import contextlib
import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from refexp.config import Config
from refexp.paths import Paths
from refexp.text.tokenize import tokenize
from refexp.text.vocab import Vocab

log = logging.getLogger(__name__)

PROPOSALS, BOX, MASK = "proposals", "box", "mask"


class GroundingError(ValueError):
    """A user's mistake or a stale model, in one line that says what to do."""


@dataclass(frozen=True)
class Variant:
    name: str  # <model>/<variant>: its folder under models/
    kind: str  # PROPOSALS | BOX | MASK
    variant: str  # the params entry
    weights: Path  # present once the variant is trained
    stage: str  # the DVC stage that trains it
    resolution: str | None = None  # MASK: lowres | highres

    @property
    def trained(self) -> bool:
        return self.weights.exists()


def all_variants(cfg: Config, paths: Paths) -> list[Variant]:
    """Every variant params defines, in params order (trained or not)."""
    from refexp.training import scrc, text_objseg
    from refexp.training.engine import CHECKPOINT_NAME

    def named(folder: Path) -> str:
        return folder.relative_to(paths.models).as_posix()

    out = [Variant(named(paths.model_dir(scrc.MODEL, v)), PROPOSALS, v, paths.model_dir(scrc.MODEL, v) / scrc.MODEL_FILE,
                   f"train_scrc@{v}") for v in cfg.scrc.variants]
    # The regression's trained weights live only in the engine's checkpoint (evaluation reads them there).
    out += [Variant(named(paths.model_dir("attention_regression", v)), BOX, v,
                    paths.model_dir("attention_regression", v) / CHECKPOINT_NAME, f"train_attention_regression@{v}")
            for v in cfg.attention_regression.variants]
    for resolution in text_objseg.RESOLUTIONS:
        out += [Variant(named(text_objseg.model_dir(paths, resolution, v)), MASK, v,
                        text_objseg.model_dir(paths, resolution, v) / text_objseg.MODEL_FILE,
                        f"{text_objseg.STAGE[resolution]}@{v}", resolution) for v in cfg.text_objseg.variants]
    return out


def trained_variants(cfg: Config, paths: Paths) -> list[Variant]:
    return [v for v in all_variants(cfg, paths) if v.trained]


def find_variant(cfg: Config, paths: Paths, name: str) -> Variant:
    variants = all_variants(cfg, paths)
    by_name = {v.name: v for v in variants}
    if name not in by_name:
        trained = [v.name for v in variants if v.trained]
        listed = ", ".join(trained) if trained else f"none yet under {paths.models} (run `dvc repro`)"
        raise GroundingError(f"unknown model '{name}'; trained models: {listed}")
    variant = by_name[name]
    if not variant.trained:
        raise GroundingError(f"{name} is not trained ({variant.weights} is missing); run `dvc repro {variant.stage}`")
    return variant


# ---------------------------------------------------------------- result


@dataclass
class Grounding:
    model: str
    kind: str
    image: str
    width: int
    height: int
    expression: str
    tokens: list[str]
    unknown_words: list[str]
    device: str
    box: list[float] | None = None  # BOX: inclusive pixels x1, y1, x2, y2
    attention_mass_in_box: float | None = None  # BOX with image attention
    image_attention: np.ndarray | None = None  # BOX: (grid, grid), for the figure only
    proposals: list[dict] = field(default_factory=list)  # PROPOSALS: best first
    proposal_method: str | None = None
    proposals_scored: int = 0
    mask: np.ndarray | None = None  # MASK: (height, width) bool

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "kind": self.kind, "image": self.image,
                               "image_size": {"width": self.width, "height": self.height},
                               "expression": self.expression, "tokens": self.tokens,
                               "unknown_words": self.unknown_words, "device": self.device}
        if self.kind == BOX:
            out.update(box=self.box, attention_mass_in_box=self.attention_mass_in_box)
        elif self.kind == PROPOSALS:
            out.update(proposals=self.proposals, proposal_method=self.proposal_method,
                       proposals_scored=self.proposals_scored)
        else:
            from refexp.data.coco import encode_mask

            out["mask"] = {"size": [self.height, self.width], "counts": encode_mask(self.mask)}
            out["mask_pixels"] = int(self.mask.sum())
        return out


# ---------------------------------------------------------------- inputs


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8, as every reader in the pipeline decodes it (PIL, converted to RGB)."""
    from PIL import Image

    if not path.is_file():
        raise GroundingError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise GroundingError(f"{path}: cannot read image ({err})") from None
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise GroundingError(f"{path}: the image has no pixels ({rgb.shape})")
    return rgb


def expression_tokens(cfg: Config, expression: str) -> list[str]:
    """The tokens the prepared tables would hold for this expression (tokenized, then clipped)."""
    tokens = tokenize(expression or "")
    if not tokens:
        raise GroundingError(f"the expression {expression!r} has no words (letters or digits); give one to ground")
    return tokens[:cfg.prepare_referit.max_tokens]


def _vocab(paths: Paths, dataset: str) -> Vocab:
    path = paths.vocab(dataset)
    if not path.exists():
        raise GroundingError(f"{path} is missing; run `dvc repro prepare_referit` (models read its vocabulary)")
    return Vocab.load(path)


def _check_fingerprint(variant_name: str, stage: str, checkpoint: Path, state: dict | None, model: torch.nn.Module,
                       training, seed: int, run_key: str) -> None:
    """Refuse weights whose checkpoint was written for other params, data or code. The test is the
    engine's own (`fit` resumes a checkpoint only on this fingerprint), so the two cannot disagree."""
    from refexp.training.engine import _fingerprint, load_checkpoint

    if state is None:
        if not checkpoint.exists():
            log.warning("%s: %s is missing, so the params it was trained with cannot be checked", variant_name,
                        checkpoint)
            return
        state = load_checkpoint(checkpoint)
    if state["fingerprint"] != _fingerprint(training, seed, model, run_key):
        raise GroundingError(f"{variant_name} was trained with other params, data or code than the current ones "
                             f"({checkpoint} does not match them); retrain it: `dvc repro {stage}`")


@contextlib.contextmanager
def _weights_must_fit(variant: Variant) -> Iterator[None]:
    """load_state_dict's error for weights of other shapes or keys, as one line."""
    try:
        yield
    except RuntimeError as err:
        # torch heads its message "Error(s) in loading state_dict for X:"; the first mismatch says more.
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
        raise GroundingError(f"{variant.name}: its weights do not fit the current params ({first}); "
                             f"retrain it: `dvc repro {variant.stage}`") from None


# ---------------------------------------------------------------- the three models


def ground(cfg: Config, paths: Paths, name: str, image: str | Path, expression: str, top: int = 10) -> Grounding:
    """The variant's prediction for (image, expression); `top` proposals for SCRC."""
    from refexp.training.engine import pick_device

    variant = find_variant(cfg, paths, name)
    tokens = expression_tokens(cfg, expression)
    path = Path(image).expanduser().resolve()
    rgb = read_image(path)
    height, width = rgb.shape[:2]
    device = pick_device()
    result = Grounding(variant.name, variant.kind, str(path), int(width), int(height), expression, tokens, [],
                       device.type)
    if variant.kind == PROPOSALS:
        vocab = _ground_scrc(cfg, paths, variant, path, rgb, tokens, top, device, result)
    elif variant.kind == BOX:
        vocab = _ground_regression(cfg, paths, variant, path, tokens, device, result)
    else:
        vocab = _ground_segmentation(cfg, paths, variant, path, tokens, result)
    known = set(vocab.words)
    result.unknown_words = sorted({t for t in tokens if t not in known})
    return result


class _ScoresOnDevice:
    """SCRC's `candidate_log_likelihoods` builds its box tensors on the CPU (its evaluation runs there);
    this stands in for the model and moves every input to the model's device, and the scores back."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model.to(device), device

    @torch.no_grad()
    def score(self, *args, **kwargs):
        from refexp.training.engine import to_device

        ll, lengths = self.model.score(*to_device(args, self.device), **to_device(kwargs, self.device))
        return ll.cpu(), lengths.cpu()


def _ground_scrc(cfg: Config, paths: Paths, variant: Variant, path: Path, rgb: np.ndarray, tokens: list[str],
                 top: int, device: torch.device, result: Grounding) -> Vocab:
    from refexp.data import proposals
    from refexp.data.torch_datasets import ImageStore, encode_tokens, pad_sequences
    from refexp.training import scrc
    from refexp.training.engine import CHECKPOINT_NAME

    s = cfg.scrc
    settings = s.variant(variant.variant)
    _vocab(paths, s.dataset)  # a clear message before the loaders read it
    vocab = scrc.joint_vocab(paths, s.dataset, s.caption_dataset) if settings.transfer else Vocab.load(paths.vocab(s.dataset))
    model = scrc.build_scrc(cfg, paths, len(vocab), settings)
    if settings.fine_tune:
        run_key = scrc.scrc_run_key(cfg, variant.variant, paths.tuples(s.dataset), paths.vocab(s.dataset),
                                    *scrc.initial_weights(cfg, paths),
                                    *([paths.model_dir(scrc.MODEL, scrc.PRETRAINED) / scrc.MODEL_FILE] if settings.transfer else []))
        _check_fingerprint(variant.name, variant.stage, variant.weights.parent / CHECKPOINT_NAME, None, model,
                           s.finetune_config(cfg.training, variant.variant), cfg.run.seed, run_key)
    else:  # not fine-tuned: the weights are the captioner's, so its pretraining is what must match
        run_key = scrc.scrc_run_key(cfg, None, paths.prepared(s.caption_dataset) / "captions.parquet",
                                    paths.vocab(s.dataset), *scrc.initial_weights(cfg, paths))
        _check_fingerprint(variant.name, "pretrain_scrc", paths.model_dir(scrc.MODEL, scrc.PRETRAINED) / CHECKPOINT_NAME,
                           None, scrc.build_scrc(cfg, paths, len(vocab), None), s.pretrain_config(cfg.training),
                           cfg.run.seed, run_key)
    with _weights_must_fit(variant):
        scrc.load_model(model, variant.weights).eval()  # as scrc.load_variant, on the model built once
    height, width = rgb.shape[:2]
    boxes = proposals.selective_search(rgb, s.n_proposals, proposals.image_seed(path.stem, cfg.run.seed)).astype(np.float64)
    result.proposal_method = proposals.SELECTIVE_SEARCH
    result.proposals_scored = len(boxes)
    if len(boxes) == 0:
        return vocab
    needs_pixels = settings.use_box or settings.use_context
    features = _single_image_features(cfg, paths, path, width, height, boxes) if needs_pixels and s.frozen_backbone else None
    image = None
    if needs_pixels and features is None:
        image = ImageStore([str(path)], paths.root, s.image_size).images[0][None]  # as evaluation's store resizes it
    inputs, targets = pad_sequences(encode_tokens([tokens], vocab, s.max_tokens), vocab.bos_id, vocab.eos_id, vocab.pad_id)
    ll, _ = scrc.candidate_log_likelihoods(_ScoresOnDevice(model, device), s.image_size, image, features, str(path),
                                           float(width), float(height), boxes, inputs, targets)
    scores = ll[0].double().numpy()
    order = np.argsort(-scores, kind="stable")  # ties keep selective search's order, as argmax does
    result.proposals = [{"box": [int(v) for v in boxes[i]], "log_likelihood": float(scores[i]),
                         "proposal_index": int(i)} for i in order[:top]]
    return vocab


def _single_image_features(cfg: Config, paths: Paths, path: Path, width: int, height: int, boxes: np.ndarray):
    """A frozen-backbone SCRC reads descriptors from the extract_features cache, which holds only the
    dataset's images: compute this image's the way the cache was built (its meta), stored as float16 too."""
    from refexp.data.torch_datasets import ImageStore
    from refexp.training import scrc
    from refexp.training.features import FeatureCache, box_key, compute_features

    cache = scrc.feature_cache(cfg, paths, cfg.scrc.dataset)  # validates the cache against scrc's params
    meta = cache.meta
    crops = pd.DataFrame(np.vstack([boxes, [[0, 0, width - 1, height - 1]]]).round().astype(np.int64),
                         columns=["x1", "y1", "x2", "y2"]).drop_duplicates().reset_index(drop=True)
    crops.insert(0, "image_path", str(path))
    weights = paths.backbone_weights(meta["backbone"], meta["pretrained"])
    store = ImageStore([str(path)], paths.root, meta["image_size"])
    feats = compute_features(crops, {str(path): (width, height)}, store, meta["backbone"], meta["pretrained"],
                             meta["crop_size"], cfg.extract_features.batch_size, meta["image_feature"],
                             str(weights) if weights else None)
    rows = {box_key(p, b): i for i, (p, *b) in enumerate(crops.itertuples(index=False))}
    return FeatureCache(path, feats.astype(np.float16), rows, meta)


def _ground_regression(cfg: Config, paths: Paths, variant: Variant, path: Path, tokens: list[str],
                       device: torch.device, result: Grounding) -> Vocab:
    from refexp.metrics.attention import attention_localisation, cells_in_box
    from refexp.training import attention_regression as ar
    from refexp.training.engine import load_checkpoint

    section = cfg.attention_regression
    df, vocab = ar.read_prepared(paths, section.dataset)
    settings = section.variant_model(variant.variant)
    # Built as evaluation builds it (ar.model_and_data): the init box from train, then weights loaded.
    model = ar.build_model(section, variant.variant, vocab, ar.init_box_of(ar.split_rows(df, "train", paths.tuples(section.dataset))),
                           cfg.run.seed, paths.backbone_weights(section.backbone, section.pretrained))
    state = load_checkpoint(variant.weights)
    _check_fingerprint(variant.name, variant.stage, variant.weights, state, model,
                       cfg.training.merged(section.training), cfg.run.seed, ar.regression_run_key(section, variant.variant, paths))
    # One query row; its box columns are the whole image, only because from_tuples also builds training targets.
    query = pd.DataFrame({"image_id": [path.stem], "image_path": [str(path)], "image_width": [result.width],
                          "image_height": [result.height], "x1": [0.0], "y1": [0.0], "x2": [result.width - 1.0],
                          "y2": [result.height - 1.0], "tokens": [tokens]})
    examples = ar.RegressionExamples.from_tuples(query, vocab, section.image_size, settings.feature_grid, paths.root,
                                                 settings.use_image)
    if settings.use_image and section.freeze_backbone:
        examples.cache_features(model)  # before the weights, as in evaluation (the backbone is frozen either way)
    with _weights_must_fit(variant):
        model.load_state_dict(state["model"])
    model.to(device)
    pred = ar.predict(model, examples, query, batch_size=1)
    box = pred.boxes[0]
    result.box = [float(v) for v in box]
    if pred.image_attention is not None:
        inside = cells_in_box(model.grid, box[None], np.array([result.width]), np.array([result.height]))
        result.attention_mass_in_box = float(attention_localisation(pred.image_attention, inside)[1][0])
        result.image_attention = pred.image_attention[0].reshape(model.grid, model.grid)
    return vocab


def _ground_segmentation(cfg: Config, paths: Paths, variant: Variant, path: Path, tokens: list[str],
                         result: Grounding) -> Vocab:
    from refexp.training import text_objseg
    from refexp.training.engine import CHECKPOINT_NAME, pick_device

    s = cfg.text_objseg
    resolution = variant.resolution
    vocab = _vocab(paths, s.dataset)
    # The files text_objseg.train keys its run on.
    files = [paths.tuples(s.dataset), paths.vocab(s.dataset)]
    backbone = paths.backbone_weights(s.backbone, s.pretrained)
    files += [backbone] if backbone else []
    if resolution == "highres":
        files.append(text_objseg.model_dir(paths, "lowres", variant.variant) / text_objseg.MODEL_FILE)
    training = cfg.training.merged(s.lowres_training if resolution == "lowres" else s.highres_training,
                                   f"text_objseg.{resolution}_training")
    model = text_objseg.build(s, variant.variant, len(vocab), resolution, paths)
    _check_fingerprint(variant.name, variant.stage, variant.weights.parent / CHECKPOINT_NAME, None, model, training,
                       cfg.run.seed, text_objseg.seg_run_key(cfg, variant.variant, resolution, files))
    with _weights_must_fit(variant):  # as text_objseg.load_trained, on the model built once
        model.load_state_dict(torch.load(variant.weights, map_location="cpu", weights_only=True))
    model.eval().to(pick_device())
    row = pd.DataFrame({"image_path": [str(path)], "tokens": [tokens]})
    examples = text_objseg.build_examples(row, vocab, paths.root, s.input_size, s.variant_model(variant.variant).max_tokens, None)
    scores = text_objseg.predict_scores(model, examples, s.eval_batch_size)[0]
    result.mask = examples.letterboxes[0].restore(scores) > 0  # as text_objseg.evaluate thresholds
    return vocab


# ---------------------------------------------------------------- figure


BOX_COLOUR = (0.0, 1.0, 1.0)  # cyan: rare in photos and in the synthetic world's palette
OTHER_PROPOSALS = 4  # runners-up drawn thin beside SCRC's best box


def render(result: Grounding, rgb: np.ndarray, out: str | Path) -> Path:
    """The image with the expression as title and the prediction overlaid, as a PNG (written atomically);
    the PNG's Title and Description text chunks carry the expression and the JSON result."""
    import json

    import matplotlib

    matplotlib.use("Agg")  # headless: the figure goes to a file
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from refexp.artifacts import atomic_path

    out = Path(out)
    height, width = rgb.shape[:2]
    scale = 6.0 / max(width, height)
    fig, ax = plt.subplots(figsize=(max(width * scale, 3.0), height * scale + 0.8))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)

    def draw_box(box, lw: float, style: str = "-", label: str | None = None) -> None:
        x1, y1, x2, y2 = box
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, lw=lw, ls=style,
                               ec=BOX_COLOUR, antialiased=False))
        if label:
            ax.text(x1, y1, label, color="black", fontsize=8, va="bottom", bbox=dict(fc=BOX_COLOUR, ec="none", pad=1))

    if result.kind == MASK:
        overlay = np.zeros((height, width, 4))
        overlay[result.mask] = (*BOX_COLOUR, 0.5)
        ax.imshow(overlay, interpolation="nearest")
        if result.mask.any():
            ax.contour(result.mask.astype(float), levels=[0.5], colors=[BOX_COLOUR], linewidths=1.5, antialiased=False)
    elif result.kind == BOX:
        if result.image_attention is not None:
            ax.imshow(result.image_attention, cmap="magma", alpha=0.35, interpolation="bilinear",
                      extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        mass = f" (attention in box {result.attention_mass_in_box:.0%})" if result.attention_mass_in_box is not None else ""
        draw_box(result.box, 2.5, label=f"box{mass}")
    else:
        for p in result.proposals[1:1 + OTHER_PROPOSALS][::-1]:
            draw_box(p["box"], 1.0, "--")
        if result.proposals:
            best = result.proposals[0]
            draw_box(best["box"], 2.5, label=f"log p = {best['log_likelihood']:.2f}")
    ax.set_axis_off()
    title = "\n".join(textwrap.wrap(f"\u201c{result.expression}\u201d", 60))
    ax.set_title(f"{title}\n{result.model}", fontsize=10)
    fig.tight_layout()
    metadata = {"Title": result.expression, "Description": json.dumps(result.to_json(), sort_keys=True)}
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata=metadata)
    finally:
        plt.close(fig)
    return out
