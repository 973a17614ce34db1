"""Training and evaluation speed of the attention regression beside the backbone's raw speed.

    python -m benchmarks.attention_regression [steps]

Measures, in one process on this CPU, with the embedded default's params (attention_regression):
- baseline: the backbone's raw forward+backward images/s at the params' image size and batch size;
- end-to-end training samples/s with a trainable backbone (engine-equivalent step: loss, backward,
  Adam), which the 80%-of-raw rule compares against the baseline;
- the default's training samples/s with the backbone frozen and its features cached, and
  evaluation ms/query (cached features, and from pixels).
Inputs are random tensors of the real shapes, so no prepared data is needed. Prints markdown and
replaces the `## Training: attention regression` section of reports/benchmarks.md.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from benchmarks._report import timed, write_section
from refexp.config import load_config
from refexp.models.attention_regression import AttentionRegression, regression_loss
from refexp.models.backbones import build_backbone
from refexp.reporting.provenance import git_revision

SECTION = "## Training: attention regression"





def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cfg = load_config()
    section = cfg.attention_regression
    training = cfg.training.merged(section.training)
    mcfg = section.variant_model("attention_full")
    if training.cpu_threads:  # as the training stages run
        torch.set_num_threads(training.cpu_threads)
    bsz, size = training.batch_size, section.image_size
    torch.manual_seed(0)
    images = torch.rand(bsz, 3, size, size)
    tokens = torch.randint(4, 50, (bsz, 8))
    lengths = torch.randint(2, 9, (bsz,))
    target = torch.rand(bsz, 4) * size / 2
    cells = torch.rand(bsz) * 10

    backbone = build_backbone(section.backbone, False)
    backbone.train()
    raw = timed(lambda: backbone(images).sum().backward(), steps)

    def train_step(model, opt, **inputs):
        def step():
            out = model(tokens=tokens, lengths=lengths, **inputs)
            loss, _ = regression_loss(out, target, cells, mcfg.lambda_squared_error, mcfg.lambda_penalty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    e2e = AttentionRegression(mcfg, 60, image_size=size, backbone=build_backbone(section.backbone, False),
                              feature_channels=backbone.channels, freeze_backbone=False)
    e2e_step = timed(train_step(e2e, torch.optim.Adam(e2e.parameters(), training.lr), images=images), steps)

    frozen = AttentionRegression(mcfg, 60, image_size=size, backbone=build_backbone(section.backbone, False),
                                 feature_channels=backbone.channels, freeze_backbone=True)
    feature_start = time.perf_counter()
    features = frozen.image_features(images)
    feature_s = (time.perf_counter() - feature_start) / bsz
    frozen_params = [p for p in frozen.parameters() if p.requires_grad]
    cached_step = timed(train_step(frozen, torch.optim.Adam(frozen_params, training.lr), images=None,
                                    features=features), steps)
    frozen.eval()
    with torch.no_grad():
        eval_cached = timed(lambda: frozen(None, tokens, lengths, features), steps)
        eval_pixels = timed(lambda: frozen(images, tokens, lengths), steps)

    rev = git_revision()[:7]
    load = os.getloadavg()[0]
    lines = [
        SECTION, "",
        f"`python -m benchmarks.attention_regression {steps}` — run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"git {rev}, torch threads {torch.get_num_threads()}, load average {load:.1f} at the end (2 shared cores). "
        f"Embedded default: backbone `{section.backbone}`, {size} px, batch {bsz}, grid {mcfg.feature_grid}, "
        f"variant `attention_full`; random inputs of the real shapes, mean of {steps} steps after 2 warm-up steps.",
        "",
        "| measurement | images or samples/s | ms per image or query |", "|---|---|---|",
        f"| baseline: backbone raw forward+backward | {bsz / raw:.1f} | {1000 * raw / bsz:.2f} |",
        f"| training end to end (trainable backbone + heads, Adam) | {bsz / e2e_step:.1f} | {1000 * e2e_step / bsz:.2f} |",
        f"| training, frozen backbone, cached features (the default) | {bsz / cached_step:.1f} | {1000 * cached_step / bsz:.2f} |",
        f"| one-time feature extraction (frozen backbone, forward only) | {1 / feature_s:.1f} | {1000 * feature_s:.2f} |",
        f"| evaluation from cached features | {bsz / eval_cached:.1f} | {1000 * eval_cached / bsz:.3f} |",
        f"| evaluation from pixels | {bsz / eval_pixels:.1f} | {1000 * eval_pixels / bsz:.3f} |",
        "",
        f"- End-to-end training runs at **{100 * raw / e2e_step:.0f}%** of the backbone's raw forward+backward speed "
        "(the data are in-memory tensors, so the loader is not the bottleneck; the rest is the heads' cost).",
        f"- Caching the frozen backbone's features makes a training step {e2e_step / cached_step:.1f}x faster than end to end.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(SECTION, text, Path(cfg.paths.reports) / "benchmarks.md")


if __name__ == "__main__":
    main()
