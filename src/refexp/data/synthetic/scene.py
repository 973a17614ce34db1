"""One synthetic scene: stuff bands (sky over water/grass/..., or wall over floor)
and 1..N coloured shapes drawn on top, with occlusion-respecting region masks.

Drawing order defines occlusion: later objects cover earlier ones. A region's mask
is its visible pixels (`label == index`), so the masks of a scene are disjoint and
cover the image. Objects that would leave themselves or an earlier object with too
few visible pixels are re-placed, and dropped (counted) when no place works.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from refexp.data.synthetic.render import shape_mask, stuff_texture, texture_noise
from refexp.data.synthetic.vocabulary import (
    COLOURS,
    GROUND_STUFF,
    SHAPES,
    SIZES,
    SIZE_RADII,
    STUFF_CLASHES,
)

PLACEMENT_ATTEMPTS = 40
# An object must keep this share of its own pixels visible (and at least MIN_PIXELS at 128 px).
MIN_VISIBLE_SHARE = 0.6
MIN_PIXELS = 30


@dataclass(frozen=True)
class SceneParams:
    width: int = 128
    height: int = 128
    min_objects: int = 2
    max_objects: int = 6
    twin_fraction: float = 0.6


@dataclass
class Region:
    """A stuff region or an object; `index` is its position in Scene.regions and its label value."""

    index: int
    kind: str  # "stuff" | "object"
    category: str
    colour: str | None = None
    size: str | None = None
    radius: float = 0.0
    mask: np.ndarray = field(default=None, repr=False)  # bool (H, W), visible pixels

    @cached_property
    def area(self) -> int:
        return int(self.mask.sum())

    @cached_property  # masks are never modified after the scene is built
    def box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2), 0-based, inclusive ends, of the visible pixels."""
        ys = np.flatnonzero(self.mask.any(axis=1))
        xs = np.flatnonzero(self.mask.any(axis=0))
        return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


@dataclass
class Scene:
    width: int
    height: int
    regions: list[Region]
    image: np.ndarray  # uint8 (H, W, 3)
    label: np.ndarray  # int16 (H, W): index of the region owning each pixel
    dropped_objects: int = 0
    has_twins: bool = False

    @property
    def objects(self) -> list[Region]:
        return [r for r in self.regions if r.kind == "object"]

    @property
    def stuff(self) -> list[Region]:
        return [r for r in self.regions if r.kind == "stuff"]

    def twin_objects(self) -> list[Region]:
        """Objects sharing category AND colour with another object of the scene."""
        keys = [(o.category, o.colour) for o in self.objects]
        return [o for o, k in zip(self.objects, keys) if keys.count(k) > 1]


def _layout(rng: np.random.Generator, p: SceneParams) -> tuple[list[str], np.ndarray]:
    """Stuff names and the stuff label map (values index into the names)."""
    h, w = p.height, p.width
    label = np.zeros((h, w), dtype=np.int16)
    roll = rng.random()
    if roll < 0.2:  # indoor: wall over floor
        horizon = int(rng.integers(int(0.5 * h), int(0.7 * h) + 1))
        label[horizon:] = 1
        return ["wall", "floor"], label
    horizon = int(rng.integers(int(0.3 * h), int(0.55 * h) + 1))
    grounds = [GROUND_STUFF[i] for i in rng.permutation(len(GROUND_STUFF))[:2]]
    label[horizon:] = 1
    if roll < 0.55:  # two grounds side by side (a beach, a lake shore)
        split = int(rng.integers(int(0.35 * w), int(0.65 * w) + 1))
        label[horizon:, split:] = 2
        return ["sky", *grounds], label
    return ["sky", grounds[0]], label


def _object_specs(rng: np.random.Generator, n: int, palette: list[str], twins: bool) -> list[tuple[str, str, str]]:
    """(category, colour, size) per object. With `twins`, about 60% of the objects come in
    groups of 2-3 identical (category, colour, size); every other (category, colour) is unique."""
    pairs = [(s, c) for s in SHAPES for c in palette]
    order = rng.permutation(len(pairs))
    groups: list[int] = []
    if twins and n >= 2:
        n_twins = min(n, max(2, math.ceil(0.6 * n)))
        while n_twins >= 2:
            g = 3 if n_twins == 3 else 2
            groups.append(g)
            n_twins -= g
    groups += [1] * (n - sum(groups))
    specs = []
    for g, pick in zip(groups, order):
        shape, colour = pairs[pick]
        size = SIZES[0] if rng.random() < 0.5 else SIZES[1]
        specs += [(shape, colour, size)] * g
    return [specs[i] for i in rng.permutation(len(specs))]


def make_scene(rng: np.random.Generator, p: SceneParams) -> Scene:
    h, w = p.height, p.width
    scale = min(h, w) / 128.0
    stuff_names, label = _layout(rng, p)
    clashes = {c for s in stuff_names for c in STUFF_CLASHES[s]}
    palette = [c for c in COLOURS if c not in clashes]
    n_objects = int(rng.integers(p.min_objects, p.max_objects + 1))
    twins = bool(rng.random() < p.twin_fraction)
    specs = _object_specs(rng, n_objects, palette, twins)

    image = np.zeros((h, w, 3), dtype=np.float32)
    noise = texture_noise(h, w, rng)
    for i, name in enumerate(stuff_names):
        region = label == i
        ys = np.flatnonzero(region.any(axis=1))
        rows = slice(int(ys[0]), int(ys[-1]) + 1)
        image[rows][region[rows]] = stuff_texture(name, noise, rng, rows)[region[rows]]

    n_stuff = len(stuff_names)
    placed: list[tuple[str, str, str, float, np.ndarray, float, float]] = []
    full_areas: list[int] = []
    visible: list[int] = []
    min_pixels = MIN_PIXELS * scale * scale
    dropped = 0
    for shape, colour, size in specs:
        lo, hi = SIZE_RADII[size]
        radius = float(rng.uniform(lo, hi)) * scale
        for _ in range(PLACEMENT_ATTEMPTS):
            cx = float(rng.uniform(radius + 1, w - 2 - radius))
            cy = float(rng.uniform(radius + 1, h - 2 - radius))
            if any(math.hypot(cx - px, cy - py) < max(0.6 * (radius + pr), 8 * scale)
                   for _, _, _, pr, _, px, py in placed):
                continue
            mask = shape_mask(shape, cx, cy, radius, h, w)
            full = int(mask.sum())
            if full < min_pixels:
                continue
            # pixels each earlier object would lose under the new one
            lost = np.bincount(label[mask], minlength=n_stuff + len(placed))[n_stuff:]
            if all(v - l >= max(min_pixels, MIN_VISIBLE_SHARE * a)
                   for v, l, a in zip(visible, lost, full_areas)):
                label[mask] = n_stuff + len(placed)
                visible = [v - l for v, l in zip(visible, lost)] + [full]
                full_areas.append(full)
                placed.append((shape, colour, size, radius, mask, cx, cy))
                break
        else:
            dropped += 1

    for shape, colour, size, radius, mask, cx, cy in placed:
        image[mask] = COLOURS[colour]
    regions = [Region(index=i, kind="stuff", category=name, mask=label == i) for i, name in enumerate(stuff_names)]
    for j, (shape, colour, size, radius, _, _, _) in enumerate(placed):
        idx = n_stuff + j
        regions.append(Region(index=idx, kind="object", category=shape, colour=colour, size=size,
                              radius=radius, mask=label == idx))
    scene = Scene(width=w, height=h, regions=regions,
                  image=np.clip(np.rint(image), 0, 255).astype(np.uint8), label=label,
                  dropped_objects=dropped)
    scene.has_twins = bool(scene.twin_objects())
    return scene
