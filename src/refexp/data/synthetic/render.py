"""Vectorised drawing: shape masks and stuff textures on coordinate grids.

Every function returns whole-image arrays computed with numpy broadcasting
(no per-pixel Python loops). Pixel (x, y) has its centre at integer (x, y).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from refexp.data.synthetic.vocabulary import STUFF


@lru_cache(maxsize=8)
def grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) float32 coordinate grids of shape (height, width); cached, read-only."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def _polar_polygon(dx: np.ndarray, dy: np.ndarray, radii: tuple[float, ...], start: float) -> np.ndarray:
    """Mask of a star-shaped polygon whose vertices alternate through `radii` at equal angles.

    A vertex sits at angle `start`; the boundary between consecutive vertices is the
    straight edge, written in polar form rho(phi) = r1 r2 sin w / (r1 sin phi + r2 sin(w - phi)).
    """
    n = len(radii)
    step = 2 * np.pi / n
    rho = np.hypot(dx, dy)
    theta = np.mod(np.arctan2(dy, dx) - start, 2 * np.pi)
    sector = np.minimum((theta // step).astype(np.int64), n - 1)
    phi = theta - sector * step
    r = np.asarray(radii, dtype=np.float32)
    r1, r2 = r[sector], r[(sector + 1) % n]
    boundary = r1 * r2 * np.sin(step) / (r1 * np.sin(phi) + r2 * np.sin(step - phi))
    return rho <= boundary


def shape_mask(shape: str, cx: float, cy: float, radius: float, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of `shape` centred at (cx, cy) with nominal `radius`.

    Computed on the shape's bounding window only, then placed in a full-size array.
    """
    reach = 1.2 * radius + 1  # the heart's lobes reach 1.16 r above the centre
    x0, x1 = max(0, int(np.floor(cx - reach))), min(width, int(np.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(np.floor(cy - reach))), min(height, int(np.ceil(cy + reach)) + 1)
    out = np.zeros((height, width), dtype=bool)
    if x0 < x1 and y0 < y1:
        ys, xs = grid(height, width)
        out[y0:y1, x0:x1] = _shape_window(shape, xs[y0:y1, x0:x1] - cx, ys[y0:y1, x0:x1] - cy, radius)
    return out


def _shape_window(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = 0.82 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.05 * r
    if shape == "triangle":  # upward, equilateral, centroid at the centre
        up = -np.pi / 2
        return _polar_polygon(dx, dy, (r, r, r), up)
    if shape == "star":  # five points
        return _polar_polygon(dx, dy, (r, 0.45 * r) * 5, -np.pi / 2)
    if shape == "heart":  # (u^2 + v^2 - 1)^3 <= u^2 v^3, v pointing up
        u, v = dx / (0.85 * r), -(dy + 0.1 * r) / (0.85 * r)
        return (u * u + v * v - 1) ** 3 <= u * u * v ** 3
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        arm = 0.36 * r
        return ((np.abs(dx) <= r) & (np.abs(dy) <= arm)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    if shape == "crescent":
        ox, oy = dx - 0.5 * r, dy + 0.15 * r
        return (dx * dx + dy * dy <= r * r) & (ox * ox + oy * oy > (0.78 * r) ** 2)
    raise ValueError(f"unknown shape {shape!r}")


def texture_noise(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-image noise shared by the stuff textures: fine per-pixel noise and coarse blotches."""
    fine = rng.normal(0.0, 1.0, size=(height, width)).astype(np.float32)
    cell = 8
    coarse = rng.normal(0.0, 1.0, size=(height // cell + 1, width // cell + 1)).astype(np.float32)
    blotch = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:height, :width]
    return fine, blotch


def stuff_texture(name: str, noise: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
                  rows: slice = slice(None)) -> np.ndarray:
    """Float32 (len(rows), width, 3) texture of a stuff class over image rows `rows` (cropped later by its mask)."""
    base, texture = STUFF[name]
    full_h, width = noise[0].shape
    fine, blotch = noise[0][rows], noise[1][rows]
    height = fine.shape[0]
    ys, xs = (a[rows] for a in grid(full_h, width))
    rgb = np.empty((height, width, 3), dtype=np.float32)
    rgb[:] = np.asarray(base, dtype=np.float32)
    if texture == "gradient":
        shade = (ys / full_h) * 40.0 + 2.0 * fine
        rgb += shade[..., None] * np.array([0.6, 0.4, 0.2], dtype=np.float32)
    elif texture == "waves":
        phase = rng.uniform(0, 2 * np.pi)
        shade = 14.0 * np.sin(ys * 0.9 + 0.15 * xs + phase) + 3.0 * fine + 4.0 * blotch
        rgb += shade[..., None]
    elif texture == "speckle":
        shade = 6.0 * fine + 8.0 * (rng.random((height, width)) > 0.93)
        rgb += shade[..., None] - 4.0 * blotch[..., None]
    elif texture == "bricks":
        row = (ys // 8).astype(np.int64)
        offset = (row % 2) * 8
        mortar = ((ys % 8) < 1) | (((xs + offset) % 16) < 1)
        rgb += (3.0 * fine + 3.0 * blotch)[..., None]
        rgb[mortar] *= 0.75
    elif texture == "planks":
        seam = (xs % 12) < 1
        grain = 6.0 * np.sin(ys * 0.35 + (xs // 12) * 1.7)
        rgb += (grain + 3.0 * fine)[..., None]
        rgb[seam] *= 0.7
    else:  # "noise"
        rgb += (8.0 * fine + 10.0 * blotch)[..., None]
    return rgb
