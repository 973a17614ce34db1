"""Segmentation speed: every Table 1 row's time per query beside the paper's Table 2 (K40 seconds), and
the high-resolution model's training samples/s beside its backbone's raw forward+backward speed.

    python -m benchmarks.text_objseg [training steps; default 40]

Needs the embedded pipeline's outputs: the prepared ReferIt tables and images, data/propose_masks/, the
trained models (models/text_objseg_{lowres,highres}/<variant>, models/text_objseg_baseline/*, the SCRC
variant) and models/backbone. Measured in one process on this CPU, torch pinned to training.cpu_threads
and the kernel path of refexp.numerics, as the stages run:

- per method (ours at low and high resolution, every text_objseg.baselines entry): its evaluate() on the
  test split, called once after one warm-up call on a few val images (a temporary data directory whose
  tuples table holds only their rows; everything else is linked to data/). The wall time of that call is
  recorded, and the method's own test/ms_per_query. The table's "this CPU" is the wall per query minus the
  whole-image row's (reading the test table, decoding the truth masks and scoring, which every row does),
  so every row counts the same span: from the prepared table and the image files to each query's mask.
  The baseline measured in the same run is ours at high resolution: each row's ratio to it;
- the proposal-classification row also pays for computing its segmentation proposals, which the stage
  propose_masks precomputes: segment_proposals is timed over the test images here and its share per
  query (ms per image x images / queries) added. The box rows read precomputed selective-search files,
  as the paper's EdgeBox proposals were precomputed; selective search is timed too, for a note;
- training: the high-resolution model trained for a few steps through the engine (training.train, in a
  temporary models and reports directory; the low-resolution model it starts from is linked in), with the
  frozen body's maps cached (text_objseg.cache_frozen_features, the pipeline's setting) and without (the
  body runs forward every step), and with one expression per image (expressions_per_image 1, the
  released code's batches) at the same expressions per step; baselines: that last run, and the backbone's
  raw forward+backward at the same input size and images per step (and its forward alone, what the
  uncached step adds).

Prints markdown and replaces the `## Segmentation speed` section of reports/benchmarks.md.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmarks._report import timed, write_section
from refexp.config import Config, load_config
from refexp.data.mask_proposals import segment_proposals
from refexp.data.proposals import image_seed, selective_search
from refexp.models.backbones import build_backbone
from refexp.numerics import numerics_record
from refexp.paths import Paths
from refexp.reporting.provenance import git_revision
from refexp.training import text_objseg, text_objseg_baselines

SECTION = "## Segmentation speed"
VARIANT = "text_objseg"  # Table 1's "Ours" rows
WARMUP_IMAGES = 4  # val images behind each method's warm-up call
BASELINE = "ours (high resolution)"
# The paper's Table 2: seconds per (image, expression) on a K40 GPU.
PAPER_K40_S = {"per-word": 0.169, "SCRC grabcut": 4.319, "GroundeR grabcut": 3.753, "MCG classification": 9.375,
               "Ours (high resolution)": 0.325}
# Table 1's rows: label, key in the paper's Table 2 (None: not timed there), evaluate() arguments.
ROWS = [
    ("ours (low resolution)", None, ("model", "lowres")),
    ("ours (high resolution)", "Ours (high resolution)", ("model", "highres")),
    ("whole image", None, ("baseline", "whole_image")),
    ("per-word average", "per-word", ("baseline", "per_word_average")),
    ("per-word intersection", "per-word", ("baseline", "per_word_intersection")),
    ("per-word union", "per-word", ("baseline", "per_word_union")),
    ("SCRC bbox", None, ("baseline", "scrc_bbox")),
    ("SCRC grabcut", "SCRC grabcut", ("baseline", "scrc_grabcut")),
    ("GroundeR bbox", None, ("baseline", "grounder_bbox")),
    ("GroundeR grabcut", "GroundeR grabcut", ("baseline", "grounder_grabcut")),
    ("MCG classification (here: segment proposals, classified)", "MCG classification",
     ("baseline", "proposal_classification")),
]


def _evaluate(cfg: Config, paths: Paths, which: tuple[str, str], split: str) -> dict:
    kind, name = which
    if kind == "model":
        return text_objseg.evaluate(cfg, paths, VARIANT, name, split)[0]
    return text_objseg_baselines.evaluate(cfg, paths, name, split)[0]


def _warmup_paths(cfg: Config, paths: Paths, tmp: Path) -> Paths:
    """Paths whose prepared table holds only the val rows of WARMUP_IMAGES val images; the rest of data/ linked."""
    dataset = cfg.text_objseg.dataset
    prepared = paths.prepared(dataset)
    data = tmp / "data"
    data.mkdir()
    for entry in paths.data.iterdir():
        if entry.name != prepared.parent.name:
            (data / entry.name).symlink_to(entry.resolve())
    for entry in prepared.parent.iterdir():
        if entry.name != dataset:
            (data / prepared.parent.name / entry.name).parent.mkdir(parents=True, exist_ok=True)
            (data / prepared.parent.name / entry.name).symlink_to(entry.resolve())
    out = data / prepared.parent.name / dataset
    out.mkdir(parents=True)
    for entry in prepared.iterdir():
        if entry.name != "tuples.parquet":
            (out / entry.name).symlink_to(entry.resolve())
    df = pd.read_parquet(paths.tuples(dataset))
    val = df[(df["split"] == "val") & df["mask_rle"].notna()]
    keep = sorted(val["image_id"].astype(str).unique())[:WARMUP_IMAGES]
    val[val["image_id"].astype(str).isin(keep)].to_parquet(out / "tuples.parquet")
    return dataclasses.replace(paths, data=data)


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def proposal_costs(cfg: Config, paths: Paths, test: pd.DataFrame, warm: pd.DataFrame) -> dict:
    """ms per test image of segment_proposals (the propose_masks stage's work) and of selective search."""
    s = cfg.text_objseg
    images = test.drop_duplicates("image_id")
    rgbs = [(str(r.image_id), _read_rgb(paths.root / r.image_path)) for r in images.itertuples()]
    first = _read_rgb(paths.root / warm["image_path"].iloc[0])
    out = {"images": len(rgbs)}
    for key, fn in (("segment_proposals", lambda rgb, _: segment_proposals(rgb, s.mask_proposals.count)),
                    ("selective_search", lambda rgb, image_id: selective_search(
                        rgb, s.n_box_proposals, image_seed(image_id, cfg.run.seed)))):
        fn(first, "warmup")
        started = time.perf_counter()
        for image_id, rgb in rgbs:
            fn(rgb, image_id)
        out[key] = 1000 * (time.perf_counter() - started) / len(rgbs)
    return out


def evaluation_speed(cfg: Config, paths: Paths) -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        warm_paths = _warmup_paths(cfg, paths, Path(tmp))
        rows = []
        for label, paper_key, which in ROWS:
            _evaluate(cfg, warm_paths, which, "val")
            started = time.perf_counter()
            metrics = _evaluate(cfg, paths, which, "test")
            wall = time.perf_counter() - started
            queries = metrics["test/queries"]
            rows.append({"label": label, "paper_s": PAPER_K40_S[paper_key] if paper_key else None,
                         "wall_ms": 1000 * wall / queries, "own_ms": metrics["test/ms_per_query"],
                         "queries": queries, "which": which, "distinct_boxes": metrics.get("test/distinct_boxes")})
        warm = pd.read_parquet(warm_paths.tuples(cfg.text_objseg.dataset))
    test = pd.read_parquet(paths.tuples(cfg.text_objseg.dataset))
    test = test[(test["split"] == "test") & test["mask_rle"].notna()]
    props = proposal_costs(cfg, paths, test, warm)
    props["queries"] = len(test)
    floor = next(r["wall_ms"] for r in rows if r["which"] == ("baseline", "whole_image"))
    share = props["segment_proposals"] * props["images"] / props["queries"]
    for r in rows:
        r["cpu_ms"] = r["wall_ms"] - floor
        if r["which"] == ("baseline", "proposal_classification"):
            r["cpu_ms"] += share
    props.update({"floor_ms": floor, "mask_share_ms": share,
                  "box_share_ms": props["selective_search"] * props["images"] / props["queries"]})
    return rows, props


def _train_once(cfg: Config, paths: Paths, cache: bool, steps: int, per_step: float,
                one_per_image: bool = False) -> dict:
    """per_step: the params' expressions per step (expressions_per_step); one_per_image: the released code's
    batches (expressions_per_image 1) of that many expressions, rounded."""
    s = cfg.text_objseg
    training = {**s.highres_training, "steps": steps}
    update = {"cache_frozen_features": cache, "highres_training": training}
    if one_per_image:
        per_step = training["batch_size"] = round(per_step)
        update["expressions_per_image"] = 1
    section = s.model_copy(update=update)
    run_cfg = cfg.model_copy(update={"text_objseg": section})
    with tempfile.TemporaryDirectory() as tmp:
        tmp_paths = dataclasses.replace(paths, models=Path(tmp) / "models", reports=Path(tmp) / "reports")
        low = text_objseg.model_dir(tmp_paths, "lowres", VARIANT)
        low.mkdir(parents=True)
        (low / text_objseg.MODEL_FILE).symlink_to(
            (text_objseg.model_dir(paths, "lowres", VARIANT) / text_objseg.MODEL_FILE).resolve())
        started = time.perf_counter()
        metrics = text_objseg.train(run_cfg, tmp_paths, VARIANT, "highres", progress=False)
        wall = time.perf_counter() - started
        curve = pd.read_csv(tmp_paths.plots(text_objseg.STAGE["highres"], VARIANT))
    # The curve's samples_per_s is cumulative: seconds at a logged step = step * samples per step / rate.
    first = curve.iloc[0]
    seconds_first = first["step"] * per_step / first["samples_per_s"]
    after = (steps - first["step"]) * per_step / (metrics["train/seconds"] - seconds_first)
    return {"samples_per_s": metrics["train/samples_per_s"], "after_first_log": after,
            "first_log_step": int(first["step"]), "setup_s": wall - metrics["train/seconds"],
            "tuples": metrics["train/tuples"], "images": metrics["train/images"]}


def expressions_per_step(cfg: Config, paths: Paths) -> float:
    """Training samples (expressions) per step: batch_size images with up to expressions_per_image each;
    over an epoch, batch_size x tuples / groups (text_objseg.ImageGroups)."""
    s = cfg.text_objseg
    batch = cfg.training.merged(s.highres_training).batch_size
    if s.expressions_per_image == 1:
        return float(batch)
    rows, _, _ = text_objseg.training_rows(cfg, paths)
    groups = sum(-(-int(n) // s.expressions_per_image) for n in rows.groupby("image_path").size())
    return batch * len(rows) / groups


def training_speed(cfg: Config, paths: Paths, steps: int) -> dict:
    s = cfg.text_objseg
    batch = cfg.training.merged(s.highres_training).batch_size
    torch.manual_seed(0)
    backbone = build_backbone(s.backbone, s.pretrained, paths.backbone_weights(s.backbone, s.pretrained))
    images = torch.rand(batch, 3, s.input_size, s.input_size)
    backbone.train()
    raw = timed(lambda: backbone(images).sum().backward(), 10)
    backbone.eval()
    with torch.no_grad():
        forward = timed(lambda: backbone(images), 10)
    per_step = expressions_per_step(cfg, paths)  # reads the training rows once
    return {"batch": batch, "per_step": per_step,
            "backbone_raw": batch / raw, "backbone_forward": batch / forward,
            "cached": _train_once(cfg, paths, True, steps, per_step),
            "uncached": _train_once(cfg, paths, False, steps, per_step),
            "one_per_image": _train_once(cfg, paths, True, steps, per_step, one_per_image=True),
            "steps": steps}


def _pipeline_rate(paths: Paths) -> float | None:
    import json

    path = paths.metrics(text_objseg.STAGE["highres"], VARIANT)
    return json.loads(path.read_text()).get("train/samples_per_s") if path.exists() else None


def markdown(cfg: Config, paths: Paths, rows: list[dict], props: dict, train: dict, header: dict) -> str:
    import cv2

    s = cfg.text_objseg
    ours = next(r for r in rows if r["label"] == BASELINE)
    paper_ours = ours["paper_s"]
    lines = [SECTION, "",
             f"`python -m benchmarks.text_objseg {train['steps']}` — run {header['stamp']}, git {header['rev']}, "
             f"torch threads {header['threads']} (training.cpu_threads), OpenCV threads {cv2.getNumThreads()}, "
             f"kernel path {header['capability']} (refexp.numerics), load average {header['load_start']:.1f} at the "
             f"start and {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} shared cores), "
             f"{header['wall']:.0f} s in all. ReferIt test split: {props['queries']:,} queries on "
             f"{props['images']} images ({s.input_size} px), variant `{VARIANT}`, backbone `{s.backbone}`; "
             f"each method's evaluate() called once after one warm-up call on {WARMUP_IMAGES} val images. "
             "Paper: Table 2, seconds per (image, expression) on a K40 GPU.", "",
             "| method | paper, K40 (s) | paper: x ours high res | this CPU (ms/query) | this CPU: x ours high res "
             "| evaluate() wall (ms/query) | its own test/ms_per_query |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = f"{r['paper_s']:.3f}" if r["paper_s"] is not None else "–"
        paper_ratio = f"{r['paper_s'] / paper_ours:.2f}" if r["paper_s"] is not None else "–"
        if r["which"] == ("baseline", "whole_image"):
            cpu, ratio = "(the floor, subtracted)", "–"
        else:
            cpu, ratio = f"{r['cpu_ms']:.2f}", f"{r['cpu_ms'] / ours['cpu_ms']:.2f}"
            if r["which"] == ("baseline", "proposal_classification"):
                cpu += f" ({r['cpu_ms'] - props['mask_share_ms']:.2f} + {props['mask_share_ms']:.2f} proposals)"
        label = f"**{r['label']}** (baseline)" if r is ours else r["label"]
        lines.append(f"| {label} | {paper} | {paper_ratio} | {cpu} | {ratio} | {r['wall_ms']:.2f} | {r['own_ms']:.2f} |")
    mcg = next(r for r in rows if r["which"] == ("baseline", "proposal_classification"))
    lines += [
        "",
        f"- \"This CPU\" is the evaluate() call's wall time per query minus the whole-image row's "
        f"({props['floor_ms']:.2f} ms/query: reading the test table, decoding every truth mask and scoring, which "
        "every row does), so each row counts the same span: from the prepared table and the image files to each "
        "query's mask at the image's size, loading the trained weights included. Each method's own "
        "test/ms_per_query times different spans: ours, the batched forward pass from letterboxed images already "
        "in memory (no image decoding, no mapping back to the image's size and thresholding); the baselines, "
        "everything after the test table is read (images, weights, proposal files, GrabCut).",
        f"- MCG classification: the paper's MCG proposals become graph-based segments and their merges "
        f"(refexp.data.mask_proposals, {s.mask_proposals.count} per image). The stage propose_masks precomputes "
        f"them, so segment_proposals was timed here over the {props['images']} test images: "
        f"{props['segment_proposals']:.1f} ms per image x {props['images']} / {props['queries']:,} queries = "
        f"{props['mask_share_ms']:.2f} ms/query, added to the row's {mcg['cpu_ms'] - props['mask_share_ms']:.2f}. "
        "A single input (one image, one expression) would pay the whole image's proposals: "
        f"{mcg['cpu_ms'] - props['mask_share_ms'] + props['segment_proposals']:.1f} ms.",
        f"- The SCRC and GroundeR rows read precomputed selective-search boxes ({s.n_box_proposals} per image, "
        "data/raw/referit/proposals), as the paper's EdgeBox proposals were precomputed, so neither side counts "
        f"them; computing them here would cost {props['selective_search']:.1f} ms per image = "
        f"{props['box_share_ms']:.2f} ms/query more.",
        "- The paper times one per-word row (0.169 s); it stands beside each of the three ways to combine the "
        "word maps. Our model runs its conv body once per query (every query's image through the network); "
        "the per-word, GroundeR and classifier rows run the same body once per image and reuse its maps for "
        "that image's queries.",
    ]
    by_name = {r["which"][1]: r for r in rows}
    grabcut = []
    for model, label in (("scrc", "SCRC"), ("grounder", "GroundeR")):
        box, cut = by_name[f"{model}_bbox"], by_name[f"{model}_grabcut"]
        if cut["distinct_boxes"]:
            per_call = (cut["cpu_ms"] - box["cpu_ms"]) * cut["queries"] / cut["distinct_boxes"]
            grabcut.append(f"{label} {cut['distinct_boxes']:,} ({per_call:.1f} ms each)")
    if grabcut:
        lines.append("- GrabCut runs once per distinct (image, top box): " + ", ".join(grabcut) + f" of "
                     f"{props['queries']:,} queries; the grabcut rows' cost is that count times one GrabCut "
                     f"({s.grabcut_iterations} iterations), on top of the bbox row.")
    c, u, o = train["cached"], train["uncached"], train["one_per_image"]
    pipeline = _pipeline_rate(paths)
    lines += [
        "",
        f"Training the high-resolution model (engine `fit`, {train['steps']} steps of {train['batch']} images "
        f"with up to {s.expressions_per_image} expressions each, {train['per_step']:.1f} expressions a step on "
        f"average; {c['tuples']:,} trainval tuples on {c['images']} images, a temporary models directory), beside "
        f"the backbone `{s.backbone}` at the same input ({s.input_size} px) and {train['batch']} images a step "
        "(mean of 10 steps after 2 warm-up steps, random pixels). A training sample is an (image, expression) "
        "pair; a backbone sample is an image:", "",
        "| measurement | samples/s | ms per sample | one-time setup (s) |",
        "|---|---|---|---|",
        f"| baseline: backbone raw forward+backward | {train['backbone_raw']:.1f} | "
        f"{1000 / train['backbone_raw']:.2f} | – |",
        f"| backbone forward only, eval mode, no grad (the frozen body) | {train['backbone_forward']:.1f} | "
        f"{1000 / train['backbone_forward']:.2f} | – |",
        f"| training, frozen body's maps cached (cache_frozen_features: true, the pipeline's) | "
        f"{c['samples_per_s']:.1f} | {1000 / c['samples_per_s']:.2f} | {c['setup_s']:.1f} |",
        f"| training, cache off (the frozen body runs forward every step) | {u['samples_per_s']:.1f} | "
        f"{1000 / u['samples_per_s']:.2f} | {u['setup_s']:.1f} |",
        f"| baseline: training, cached, one expression per image (expressions_per_image 1, batch "
        f"{round(train['per_step'])}: the released code's batches) | {o['samples_per_s']:.1f} | "
        f"{1000 / o['samples_per_s']:.2f} | {o['setup_s']:.1f} |",
        "",
        f"- With the cache the training step never runs the backbone (it trains the 1x1 fc head, the LSTM, the "
        f"classifier and the deconvolution on the cached maps), so it runs at {c['samples_per_s'] / train['backbone_raw']:.1f}x "
        f"the backbone's raw forward+backward speed; without it, at {u['samples_per_s'] / train['backbone_raw']:.2f}x "
        "(the frozen body costs a forward pass and no backward). In images (each with its expressions), the "
        f"cached training runs {c['samples_per_s'] * train['batch'] / train['per_step']:.1f} images/s. "
        f"Sharing each image's side among its expressions makes a sample {c['samples_per_s'] / o['samples_per_s']:.2f}x "
        "as fast as one expression per image (same model, same expressions per step). "
        f"The cache costs {c['setup_s'] - u['setup_s']:.1f} s once (setup: reading the images and full-size labels, "
        "building the model, and with the cache the body over every training image).",
        f"- Samples/s are the engine's train/samples_per_s over all {train['steps']} steps; from step "
        f"{c['first_log_step']} on (the engine's curve, first steps' one-off costs left out): "
        f"{c['after_first_log']:.1f} cached, {u['after_first_log']:.1f} uncached.",
    ]
    if pipeline is not None:
        lines.append(f"- The pipeline's own run (train_text_objseg_highres, {s.highres_training.get('steps')} "
                     f"steps, another time): {pipeline:.1f} samples/s.")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    cfg = load_config()
    paths = Paths.from_config(cfg)
    if cfg.training.cpu_threads:  # as the stages run
        torch.set_num_threads(cfg.training.cpu_threads)
    rows, props = evaluation_speed(cfg, paths)
    train = training_speed(cfg, paths, steps)
    rev = git_revision()
    header = {"stamp": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "rev": rev[:7] + ("+dirty" if rev.endswith("+dirty") else ""), "threads": torch.get_num_threads(),
              "capability": numerics_record()["torch_cpu_capability"], "load_start": load_start,
              "wall": time.perf_counter() - started}
    text = markdown(cfg, paths, rows, props, train, header)
    print(text)
    write_section(SECTION, text, paths.reports / "benchmarks.md")


if __name__ == "__main__":
    main()
