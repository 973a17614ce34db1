"""Build the synthetic world and write it in the requested real formats.

Determinism: image i is built from its own generator `default_rng([seed, 7, i])`, its
Visual Genome region descriptions from a second one, `default_rng([seed, VG_STREAM, i])`
(so they can change without moving the ReferIt and COCO files), the split from
`default_rng([seed, 11])`; nothing reads the clock, uuids, or set order,
and every encoder is byte-stable (see encoding.py). So one seed gives byte-identical
files, and the world does not depend on which formats are written.

Visual Genome has its own size (`vg_images`, `vg_regions_per_image`): its layout holds the
world's first min(vg_images, n_images) images (coco_id = the same image in coco/) and,
beyond the world, `vg_images - n_images` VG-only scenes (ids n_images + 1..., coco_id null,
as real VG has images outside COCO). VG-only scene j is drawn from its own generators,
`default_rng([seed, VG_ONLY_STREAM, j])` for the scene and `[seed, VG_ONLY_DESCRIPTION_STREAM, j]`
for its descriptions (`vg_only_region_descriptions`, a more varied wording than the shared
images'), is built only when the VG layout is written, and never runs selective search: so
the VG parameters cannot move a byte of the ReferIt or COCO layouts.

The refer layout's expressions (refer_language.py: UNC-Ref and G-Ref styles, `refer` params)
are computed only when that layout is written, from their own generators
`default_rng([seed, 23 (UNC) or 29 (G-Ref), i])` and, for the testA/testB cut,
`default_rng([seed, 31])`: so writing it, or changing its parameters, moves no byte of the
other layouts.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from refexp.data import proposals
from refexp.data.synthetic import encoding
from refexp.data.synthetic.grammar import KINDS, Geometry, normalise_mix, scene_expressions
from refexp.data.synthetic.language import captions, region_descriptions, vg_only_region_descriptions
from refexp.data.synthetic.refer_language import ReferParams, image_refs, refer_params, refer_splits
from refexp.data.synthetic.scene import SceneParams, make_scene
from refexp.data.synthetic.writers import WRITERS, SyntheticImage
from refexp.processes import die_with_parent

log = logging.getLogger(__name__)

FORMATS = tuple(WRITERS)
# A scene where some region has no unambiguous expression is redrawn up to this many times.
SCENE_ATTEMPTS = 8
# Second key of the region descriptions' generator (7 is the image's, 11 the split's).
VG_STREAM = 13
# Second keys of the VG-only scenes' generators: the scene's and its descriptions'.
VG_ONLY_STREAM = 17
VG_ONLY_DESCRIPTION_STREAM = 19


def assign_splits(n_images: int, seed: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Split name per image index: a seeded permutation cut into val, test and train."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, test_fraction and a sum < 1, got {val_fraction}, {test_fraction}")
    order = np.random.default_rng([seed, 11]).permutation(n_images)
    n_val, n_test = round(n_images * val_fraction), round(n_images * test_fraction)
    splits = ["train"] * n_images
    for rank, i in enumerate(order):
        if rank < n_val:
            splits[i] = "val"
        elif rank < n_val + n_test:
            splits[i] = "test"
    return splits


def build_image(index: int, seed: int, split: str, params: SceneParams, weights: np.ndarray,
                expressions_per_target: int, captions_per_image: int, vg_regions_per_image: int) -> SyntheticImage:
    """Everything about image `index` (id index + 1), from its own seeded generator."""
    rng = np.random.default_rng([seed, 7, index])
    for _ in range(SCENE_ATTEMPTS):
        scene = make_scene(rng, params)
        expressions = scene_expressions(scene, expressions_per_target, weights, rng)
        if all(expressions):
            break
    geometry = Geometry(scene)
    return SyntheticImage(
        image_id=index + 1, split=split, scene=scene, expressions=expressions,
        captions=captions(scene, captions_per_image, rng),
        region_descriptions=region_descriptions(scene, vg_regions_per_image,
                                                np.random.default_rng([seed, VG_STREAM, index]), geometry),
    )


def iter_images(n_images: int, seed: int, *, image_width: int = 128, image_height: int = 128,
                min_objects: int = 2, max_objects: int = 6, expressions_per_target: int = 3,
                expression_mix: Mapping[str, float] | None = None, twin_fraction: float = 0.6,
                captions_per_image: int = 5, vg_images: int | None = None, vg_regions_per_image: int = 6,
                val_fraction: float = 0.1, test_fraction: float = 0.2, refer: Mapping | None = None,
                with_refer: bool = False) -> Iterator[SyntheticImage]:
    """The world's images in id order, then the VG-only scenes, without writing anything (what
    `generate` writes; a VG-only scene has split "" and in_coco False). With `with_refer`, each
    world image also carries its refer layout refs (`item.refer`, from the `refer` params)."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    weights = normalise_mix(dict(expression_mix) if expression_mix is not None else dict.fromkeys(KINDS, 1.0))
    params = SceneParams(width=image_width, height=image_height, min_objects=min_objects,
                         max_objects=max_objects, twin_fraction=twin_fraction)
    splits = assign_splits(n_images, seed, val_fraction, test_fraction)
    _, vg_only = vg_sizes(n_images, vg_images)
    refer_p, by_style = refer_params(refer), refer_splits(splits, seed)
    for index in range(n_images):
        item = build_image(index, seed, splits[index], params, weights, expressions_per_target,
                           captions_per_image, vg_regions_per_image)
        if with_refer:
            _add_refs(item, index, seed, by_style, refer_p)
        yield item
    for index in range(vg_only):
        yield build_vg_only_image(index, seed, n_images + 1, params, vg_regions_per_image)


def build_vg_only_image(index: int, seed: int, first_id: int, params: SceneParams,
                        vg_regions_per_image: int) -> SyntheticImage:
    """VG-only scene `index` (image id first_id + index): no split, expressions or captions."""
    scene = make_scene(np.random.default_rng([seed, VG_ONLY_STREAM, index]), params)
    return SyntheticImage(
        image_id=first_id + index, split="", scene=scene, expressions=[], captions=[],
        region_descriptions=vg_only_region_descriptions(
            scene, vg_regions_per_image, np.random.default_rng([seed, VG_ONLY_DESCRIPTION_STREAM, index])),
        in_coco=False)


def vg_sizes(n_images: int, vg_images: int | None) -> tuple[int, int]:
    """(world images in the VG layout, VG-only scenes) for `vg_images` (None: the world's n_images)."""
    total = n_images if vg_images is None else vg_images
    if total < 1:
        raise ValueError(f"vg_images must be >= 1, got {vg_images}")
    return min(total, n_images), max(0, total - n_images)


def _add_refs(item: SyntheticImage, index: int, seed: int, by_style: Mapping[str, tuple[str, ...]],
              params: ReferParams) -> None:
    item.refer = image_refs(item.scene, index, seed, {style: s[index] for style, s in by_style.items()}, params)


@dataclass(frozen=True)
class _VgOnlyJob:
    """Builds VG-only scene `index` and writes its VG files (no selective search)."""

    seed: int
    first_id: int
    params: SceneParams
    vg_regions_per_image: int
    root: Path

    def __call__(self, index: int) -> tuple[dict[str, dict], Counter]:
        item = build_vg_only_image(index, self.seed, self.first_id, self.params, self.vg_regions_per_image)
        item.jpeg = encoding.jpeg_bytes(item.scene.image)
        record = WRITERS["visual_genome"](self.root).write_image(item)
        return {"visual_genome": record}, Counter(vg_only_images=1, vg_only_objects=len(item.scene.objects))


@dataclass(frozen=True)
class _ImageJob:
    """Builds image `index` and writes its own files; picklable, so it runs in workers too."""

    seed: int
    splits: tuple[str, ...]
    params: SceneParams
    weights: tuple[float, ...]
    expressions_per_target: int
    captions_per_image: int
    vg_regions_per_image: int
    roots: tuple[tuple[str, Path], ...]
    vg_shared: int  # the first vg_shared images are in the VG layout too
    refer: ReferParams
    refer_splits: tuple[tuple[str, tuple[str, ...]], ...]  # (style, split per image)

    def __call__(self, index: int) -> tuple[dict[str, dict], Counter]:
        item = build_image(index, self.seed, self.splits[index], self.params, np.array(self.weights),
                           self.expressions_per_target, self.captions_per_image, self.vg_regions_per_image)
        item.jpeg = encoding.jpeg_bytes(item.scene.image)
        roots = tuple((f, root) for f, root in self.roots if f != "visual_genome" or index < self.vg_shared)
        if any(f == "referit" for f, _ in roots):
            # Proposals from a real method, on the pixels every reader decodes (not the ground truth).
            item.proposals = proposals.selective_search(encoding.decode_jpeg(item.jpeg), proposals.DEFAULT_COUNT,
                                                        proposals.image_seed(str(item.image_id), self.seed))
        if any(f == "refer" for f, _ in roots):
            _add_refs(item, index, self.seed, dict(self.refer_splits), self.refer)
        records = {f: WRITERS[f](root).write_image(item) for f, root in roots}
        stats: Counter = Counter()
        _tally(stats, item)
        return records, stats


def generate(out_dir: str | Path, n_images: int, seed: int, *, image_width: int = 128, image_height: int = 128,
             min_objects: int = 2, max_objects: int = 6, expressions_per_target: int = 3,
             expression_mix: Mapping[str, float] | None = None, twin_fraction: float = 0.6,
             captions_per_image: int = 5, vg_images: int | None = None, vg_regions_per_image: int = 6,
             val_fraction: float = 0.1, test_fraction: float = 0.2, refer: Mapping | None = None,
             formats: Iterable[str] = FORMATS, workers: int = 1) -> dict:
    """Write the synthetic world to out_dir/<format>/ for each format; return counts.

    The keyword arguments are the fields of SyntheticConfig (expression_mix as a
    {kind: weight} dict; None means equal weights). With `workers` > 1, spawned
    processes build the images; the files are the same bytes whatever the number. `vg_images`
    (None: n_images) sizes the Visual Genome layout (see the module docstring); `refer` (a dict or
    the SyntheticReferConfig section; None: the defaults) parametrises the refer layout's
    expressions (refer_language.refer_params). The
    default is 1: on the shared 2-core machine, 2 workers were not faster (see
    benchmarks/synthetic.py). Each format directory is written under a temporary name
    and renamed when complete, replacing a previous one.
    """
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in WRITERS]
    if unknown or not formats:
        raise ValueError(f"formats: unknown or empty {unknown or formats} (known: {list(WRITERS)})")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    for name, value, least in (("image_width", image_width, 32), ("image_height", image_height, 32),
                               ("expressions_per_target", expressions_per_target, 1),
                               ("captions_per_image", captions_per_image, 1),
                               ("vg_regions_per_image", vg_regions_per_image, 1)):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    vg_shared, vg_only = vg_sizes(n_images, vg_images)
    if hasattr(expression_mix, "model_dump"):  # an ExpressionMix section passed as is
        expression_mix = expression_mix.model_dump()
    weights = normalise_mix(dict(expression_mix) if expression_mix is not None else dict.fromkeys(KINDS, 1.0))
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    refer_p = refer_params(refer)  # validated even when the refer layout is not written

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = {f: out_dir / f".{f}.partial" for f in formats}
    for path in tmp.values():
        shutil.rmtree(path, ignore_errors=True)
    splits = tuple(assign_splits(n_images, seed, val_fraction, test_fraction))
    job = _ImageJob(
        seed=seed, splits=splits,
        params=SceneParams(width=image_width, height=image_height, min_objects=min_objects,
                           max_objects=max_objects, twin_fraction=twin_fraction),
        weights=tuple(float(w) for w in weights), expressions_per_target=expressions_per_target,
        captions_per_image=captions_per_image, vg_regions_per_image=vg_regions_per_image,
        roots=tuple((f, tmp[f]) for f in formats), vg_shared=vg_shared,
        refer=refer_p, refer_splits=tuple(refer_splits(splits, seed).items()))
    vg_job = _VgOnlyJob(seed=seed, first_id=n_images + 1, params=job.params,
                        vg_regions_per_image=vg_regions_per_image, root=tmp.get("visual_genome", out_dir))
    n_vg_only = vg_only if "visual_genome" in formats else 0
    writers = {f: WRITERS[f](tmp[f]) for f in formats}
    stats: Counter = Counter()
    with contextlib.ExitStack() as stack:
        if workers > 1:
            # die_with_parent: a killed fetch_data leaves no worker rendering on its own.
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                           initializer=die_with_parent, initargs=(os.getpid(),)))
            results = itertools.chain(pool.map(job, range(n_images), chunksize=16),
                                      pool.map(vg_job, range(n_vg_only), chunksize=64))
        else:
            results = itertools.chain(map(job, range(n_images)), map(vg_job, range(n_vg_only)))
        for records, image_stats in results:  # in image order, whatever the workers
            for f, record in records.items():
                writers[f].collect(record)
            stats.update(image_stats)
    counts = {"images": n_images, **{k: stats[k] for k in sorted(stats)}}
    if "visual_genome" in formats:
        counts.update(vg_images=vg_shared + n_vg_only, vg_only_images=n_vg_only,
                      vg_only_objects=stats["vg_only_objects"])
    for f, writer in writers.items():
        counts.update(writer.finish())
        final = out_dir / f
        shutil.rmtree(final, ignore_errors=True)
        tmp[f].rename(final)
    log.info("synthetic world: %s", counts)
    return counts


def _tally(stats: Counter, item: SyntheticImage) -> None:
    scene = item.scene
    stats[f"{item.split}_images"] += 1
    stats["objects"] += len(scene.objects)
    stats["stuff_regions"] += len(scene.stuff)
    stats["twin_objects"] += len(scene.twin_objects())
    stats["scenes_with_twins"] += int(scene.has_twins)
    stats["objects_dropped_for_occlusion"] += scene.dropped_objects
    for exprs in item.expressions:
        for e in exprs:
            stats[f"expressions_{e.kind}"] += 1
