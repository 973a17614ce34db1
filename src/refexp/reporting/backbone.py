"""reports/backbone.md: the pretrained `tiny` backbone (the embedded ImageNet stand-in), its own accuracy
on held-out COCO-format images beside the all-background baseline, per-class IoU, predictions on held-out
images and the training curve. Reads the pretrain_backbone metrics and checkpoint."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from refexp.artifacts import atomic_path, write_text  # noqa: E402
from refexp.config import Config  # noqa: E402
from refexp.data.torch_datasets import ImageStore  # noqa: E402
from refexp.paths import Paths  # noqa: E402
from refexp.reporting.provenance import ModelInput, provenance, run_summary  # noqa: E402
from refexp.reporting.tables import markdown_table  # noqa: E402
from refexp.training import backbone as recipe  # noqa: E402
from refexp.training.engine import CHECKPOINT_NAME, load_checkpoint  # noqa: E402

SPLITS = (("train", "train2014, trained on"), ("heldout", "train2014, held out"), ("val2014", "val2014, never trained on"))


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}%"


def _predictions_figure(cfg: Config, paths: Paths, out, n: int = 4) -> bool:
    """Held-out images: the image, the true and the predicted category per pixel, the predicted colours."""
    section = cfg.pretrain_backbone
    ckpt = paths.model_dir("backbone", section.backbone) / CHECKPOINT_NAME
    if not ckpt.exists():
        return False
    instances = recipe.read_instances(paths, section.dataset)
    _, held, val = recipe.split_images(instances, section.holdout_fraction, cfg.run.seed, section.max_images)
    shown = (held or val)[:n]
    if not shown:
        return False
    names = recipe.class_names(instances)
    model = recipe.build(section, len(names))
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    model.eval()
    images = ImageStore(shown, paths.root, section.image_size).images
    labels = recipe.label_maps(instances, shown, section.image_size, names)
    with torch.no_grad():
        logits, colour = model(images.float() / 255.0)
    cmap = plt.get_cmap("tab10", len(names))
    fig, axes = plt.subplots(len(shown), 4, figsize=(10, 2.6 * len(shown)), squeeze=False)
    for r in range(len(shown)):
        panels = [(images[r].permute(1, 2, 0).numpy(), "image", {}),
                  (labels[r].numpy(), "true category", {"cmap": cmap, "vmin": 0, "vmax": len(names) - 1}),
                  (logits[r].argmax(0).numpy(), "predicted category", {"cmap": cmap, "vmin": 0, "vmax": len(names) - 1}),
                  (colour[r].permute(1, 2, 0).clamp(0, 1).numpy(), "predicted colour", {})]
        for ax, (img, title, kw) in zip(axes[r], panels):
            ax.imshow(img, interpolation="nearest", **kw)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(names))]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 10), fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return True


def _curve_figure(curve_path, out) -> bool:
    if not curve_path.exists():
        return False
    curve = pd.read_csv(curve_path)
    if curve.empty:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for column, label in (("loss", "total"), ("loss/category", "category (weighted cross-entropy)"),
                          ("loss/colour", "colour (MSE)")):
        if column in curve:
            ax.plot(curve["step"], curve[column], label=label)
    ax.set(xlabel="step", ylabel="training loss", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return True


def build_backbone_report(cfg: Config, paths: Paths) -> dict:
    section = cfg.pretrain_backbone
    stage = recipe.STAGE
    metrics_path = paths.metrics(stage, section.backbone)
    m = json.loads(metrics_path.read_text())
    tcfg = cfg.training.merged(section.training)
    lines = ["# Pretrained backbone: the embedded ImageNet stand-in", ""]
    lines += run_summary(cfg, [section.dataset], [ModelInput(
        "pretrained CNN", section.backbone, False, f"held at {section.image_size} px, training crops resized to "
        f"{section.crop_size} px", "trained by this stage")])
    lines += ["Every paper starts its CNN from ImageNet weights, which the embedded world cannot download. The "
              f"`{section.backbone}` CNN is instead trained once, on the {m['train/images']} train2014 images of "
              f"`{section.dataset}` (a seeded {100 * section.holdout_fraction:.0f}% of train2014 held out; val2014, "
              "where the synthetic world puts its val and test scenes, never trained on), to label each pixel with "
              f"its category (background or one of {m['classes'] - 1} COCO categories, from the instance masks) "
              "and to reproduce its colour. `pretrained: true` for `tiny` then means this checkpoint, in every model "
              "that uses it (SCRC, the attention regression, the feature cache).", "",
              f"Training: {tcfg.steps} steps of {tcfg.batch_size} random crops ({100 * section.min_crop:.0f}-100% of the "
              f"image side, flipped), {tcfg.optimizer} lr {tcfg.lr} ({tcfg.schedule}), category cross-entropy weighted "
              f"by pixel frequency^-{section.class_balance} plus {section.colour_weight} x colour MSE; "
              f"{m['train/seconds']:.0f} s on this CPU ({m['train/samples_per_s']:.0f} crops/s).", "",
              "## Its own accuracy (whole images)", ""]
    rows = []
    for prefix, label in SPLITS:
        if f"{prefix}/pixel_accuracy" not in m:
            continue
        rows.append([label, str(m[f"{prefix}/images"]), _pct(m[f"{prefix}/pixel_accuracy"]),
                     _pct(m[f"{prefix}/all_background_pixel_accuracy"]), _pct(m[f"{prefix}/mean_iou"]),
                     _pct(m[f"{prefix}/mean_iou_categories"]), f"{m[f'{prefix}/colour_mae']:.1f}"])
    lines += markdown_table(["images", "count", "pixel accuracy", "baseline: all background", "mean IoU (all classes)",
                             "mean IoU (categories)", "colour error (0-255, mean abs)"], rows)
    names = [k.split("/", 2)[2] for k in m if k.startswith("heldout/iou/")]
    if names:
        lines += ["Per-class IoU:", ""]
        lines += markdown_table(["class", *[label for p, label in SPLITS if f"{p}/iou/{names[0]}" in m]],
                                [[n, *[_pct(m.get(f"{p}/iou/{n}")) for p, _ in SPLITS if f"{p}/iou/{names[0]}" in m]]
                                 for n in names])
    figures = paths.figures("backbone")
    lines += ["## Figures", ""]
    if _predictions_figure(cfg, paths, figures / "heldout_predictions.png"):
        lines += ["Held-out images (never trained on):", "", "![held-out predictions](figures/backbone/heldout_predictions.png)", ""]
    if _curve_figure(paths.plots(stage, section.backbone), figures / "training_curve.png"):
        lines += ["![training curve](figures/backbone/training_curve.png)", ""]
    lines += provenance(cfg, ("datasets", "pretrain_backbone", "training"), paths.root)
    write_text(paths.report("backbone"), "\n".join(lines))
    return {f"report/{p}/mean_iou_categories": m.get(f"{p}/mean_iou_categories") for p, _ in SPLITS}
