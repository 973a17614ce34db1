"""reports/referit_image_free.md: image-free models on the real ReferIt annotations beside chance
and the constant box, with provenance and the training curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from refexp.artifacts import atomic_path, write_text  # noqa: E402
from refexp.config import Config  # noqa: E402
from refexp.reporting.provenance import ModelInput, provenance, run_summary  # noqa: E402


def _curves_figure(curves: dict[str, Path], out: Path) -> bool:
    present = {name: pd.read_csv(p) for name, p in curves.items() if Path(p).exists()}
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.2), squeeze=False)
    for ax, (name, curve) in zip(axes[0], present.items()):
        ax.plot(curve["step"], curve["loss"])
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return True


def write_report(cfg: Config, metrics: dict, details: dict, report_path: Path, figures_dir: Path,
                 command: str) -> None:
    """`details`: refexp.training.referit_image_free.run_settings (curves, model and training settings)."""
    s = cfg.referit_image_free
    fig_path = figures_dir / "curves.png"
    has_fig = _curves_figure({f"text-only regression ({s.regression_variant})": details["regression_curve"],
                              f"image-free SCRC ({s.scrc_variant})": details["scrc_curve"]}, fig_path)
    m = metrics
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [
        "# Image-free models on the real ReferIt annotations", "",
        *run_summary(cfg, [s.dataset], [ModelInput("both models", None)]),
        f"Reproduce: `{command}` (needs ../shared/data/referit; not part of the embedded `dvc repro`).",
        "",
        "The complete real ReferIt annotations (Hu et al.'s release: boxes, expressions, image sizes and",
        "splits, but no images) are enough to train models that never see a pixel. Both models are trained",
        f"on the real train split ({m['train/tuples']:,} tuples, {m['train/images']:,} images) and tested on",
        f"the real test split ({m['test/tuples']:,} tuples, {m['test/images']:,} images, {m['test/regions']:,} regions).",
        "",
        "| measure | what it is | test |",
        "|---|---|---|",
        f"| `test/chance_p_at_1` | uniform pick among the image's annotated boxes, correct if IoU >= 0.5 (exact expectation) | {pct(m['test/chance_p_at_1'])}% |",
        f"| `test/p_at_1` | image-free SCRC (x_spatial + text), top-1 of the image's annotated boxes by summed log-likelihood | {pct(m['test/p_at_1'])}% |",
        f"| | same, length-normalised log-likelihood | {pct(m['test/p_at_1_length_normalised'])}% |",
        f"| `test/constant_box_accuracy` | mean training box (normalised {m['constant_box/normalised_xywh']}) mapped to each image | {pct(m['test/constant_box_accuracy'])}% |",
        f"| `test/accuracy` | text-only attention regression, IoU >= 0.5 | {pct(m['test/accuracy'])}% |",
        "",
        f"- Image-free SCRC over chance: {m['test/p_at_1'] / m['test/chance_p_at_1']:.2f}x "
        f"(+{pct(m['test/p_at_1'] - m['test/chance_p_at_1'])} points).",
        f"- Text-only regression over the constant box: {m['test/accuracy'] / max(m['test/constant_box_accuracy'], 1e-12):.1f}x "
        f"(+{pct(m['test/accuracy'] - m['test/constant_box_accuracy'])} points); mean IoU {m['test/regression_mean_iou']:.3f}.",
        f"- The chance level computed by refexp.metrics.chance ({m['test/chance_p_at_1']:.6f}) and inside the SCRC",
        f"  evaluation ({m['scrc/chance_p_at_1_check']:.6f}) "
        + ("agree." if abs(m['test/chance_p_at_1'] - m['scrc/chance_p_at_1_check']) < 1e-9 else "DIFFER."),
        "- Summed and length-normalised log-likelihoods "
        + ("give the same P@1" if m['test/p_at_1'] == m['test/p_at_1_length_normalised'] else "give different P@1")
        + ": within one query every candidate box is scored with the same expression, so dividing by its",
        "  length can only change the ranking through ties.",
        "- IoU uses the papers' inclusive pixel convention (w = x2 - x1 + 1). The annotated boxes of an image",
        "  are the distinct regions of that image with an expression in the test split.",
        "",
    ]
    sizes = [g for g in ("small_target", "large_target") if f"test/chance_p_at_1/{g}" in m]
    if sizes:
        lines += ["By target size (small: box under 10% of the image):", "",
                  "| | " + " | ".join(g.replace("_", " ") for g in sizes) + " |", "|---|" + "---|" * len(sizes),
                  "| chance P@1 | " + " | ".join(f"{pct(m[f'test/chance_p_at_1/{g}'])}%" for g in sizes) + " |",
                  "| constant box | " + " | ".join(f"{pct(m[f'test/constant_box_accuracy/{g}'])}%" for g in sizes) + " |",
                  "| text-only regression | " + " | ".join(
                      f"{pct(m[f'test/accuracy/{g}'])}%" if f"test/accuracy/{g}" in m else "—" for g in sizes) + " |", ""]
    lines += [
        "For reference, the papers report with images: SCRC 72.74% P@1 over annotated boxes (Hu et al.,",
        "Table 1), and the attention regression 37.26% accuracy (paper 003, Table 2).",
        "",
        "## Training",
        "",
        f"- Text-only regression: {m['regression/train_steps']} steps, "
        f"{m['regression/train_samples_per_s']:.0f} samples/s, {m['regression/test_ms_per_query']:.3f} ms/query at test; "
        f"model `{details['regression_model']}`; training `{details['regression_training']}`.",
        f"- Image-free SCRC: {m['scrc/train_steps']} steps; training `{details['scrc_training']}`.",
        f"- Whole run: {m['seconds']:.0f} s on this CPU.",
        "",
    ]
    if has_fig:
        lines += [f"![training curves](figures/{figures_dir.name}/{fig_path.name})", ""]
    lines += provenance(cfg, ("referit_image_free", "attention_regression", "scrc", "prepare_referit", "training",
                              "datasets"))
    write_text(report_path, "\n".join(lines))
