"""Speed of the synthetic world generator: images/s for a full write of all three formats.

The generator runs in one process; on a shared machine compare its CPU time too.

    python -m benchmarks.synthetic [n_images]     (default 2000; target: < 60 s on 2 cores)

Baselines measured in the same run:
- file-writing floor: writing the very same bytes (every file the generator produced)
  into a fresh directory, i.e. the cost no generator can avoid;
- per-pixel drawing: one shape mask drawn with a Python loop over pixels versus the
  vectorised coordinate-grid version the generator uses.
Also a phase breakdown (scene, expressions, language, encoding+writing) on a subset.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from refexp.data.synthetic import generate
from refexp.data.synthetic.grammar import normalise_mix, scene_expressions
from refexp.data.synthetic.language import captions, region_descriptions
from refexp.data.synthetic.render import shape_mask
from refexp.data.synthetic.scene import SceneParams, make_scene


def _per_pixel_circle(cx: float, cy: float, r: float, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            mask[y, x] = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    return mask


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(n_images: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "world"
        t0, c0 = time.perf_counter(), time.process_time()
        counts = generate(out, n_images, seed=0)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        files = [p for p in sorted(out.rglob("*")) if p.is_file()]
        payload = [(p.relative_to(out), p.read_bytes()) for p in files]
        size = sum(len(b) for _, b in payload)
        copy = Path(tmp) / "copy"
        t0 = time.perf_counter()
        for rel, data in payload:
            target = copy / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        floor = time.perf_counter() - t0

    print(f"generate: {n_images} images, all formats, {len(files)} files, {size / 1e6:.1f} MB "
          f"in {total:.1f} s = {n_images / total:.1f} images/s (CPU time of this process {cpu:.1f} s = "
          f"{n_images / cpu:.1f} images/s; the machine is shared, so wall time includes waiting)")
    print(f"baseline file-writing floor (same bytes): {floor:.1f} s = {n_images / floor:.1f} images/s "
          f"({100 * floor / total:.0f}% of generate)")
    print(f"counts: regions {counts['referit_regions']}, expressions {counts['referit_expressions']}, "
          f"coco instances {counts['coco_instances']}, vg regions {counts['vg_regions']}")

    # phase breakdown on a subset, in memory
    params, weights, n = SceneParams(), normalise_mix({"attribute": 1, "position": 1, "relation": 1}), 200
    rngs = [np.random.default_rng([0, 7, i]) for i in range(n)]
    t0 = time.perf_counter()
    scenes = [make_scene(rng, params) for rng in rngs]
    t1 = time.perf_counter()
    for scene, rng in zip(scenes, rngs):
        scene_expressions(scene, 3, weights, rng)
    t2 = time.perf_counter()
    for scene, rng in zip(scenes, rngs):
        captions(scene, 5, rng)
        region_descriptions(scene, 6, rng)
    t3 = time.perf_counter()
    per = {"scene": t1 - t0, "expressions": t2 - t1, "language": t3 - t2}
    print("per image (ms): " + ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in per.items())
          + f", everything else (proposals, encoding, writing) "
          f"{1000 * total / n_images - 1000 * sum(per.values()) / n:.2f}")

    args = ("circle", 60.3, 70.1, 12.0, 128, 128)
    same = np.array_equal(shape_mask(*args), _per_pixel_circle(*args[1:]))
    assert same, "vectorised and per-pixel circles differ"
    vectorised = _best_of(lambda: shape_mask(*args), 50)
    loop = _best_of(lambda: _per_pixel_circle(*args[1:]), 3)
    print(f"baseline per-pixel loop mask: {1000 * loop:.2f} ms vs vectorised {1000 * vectorised:.3f} ms "
          f"({loop / vectorised:.0f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
