"""Referring-expression grammar: a generator of referents, an exact evaluator, a realiser.

A `Referent` is the meaning of an expression: a target description (category plus
optional colour/size), optionally narrowed by an absolute zone ("on the left"), a
superlative ("the leftmost"), or a relation to a uniquely described landmark ("above
the red circle", "in the sky"). `denotation(ref, geometry)` evaluates it exactly
against the scene: a region satisfies a predicate when its score is > 0.

Semantics (all on the centres and boxes of the *visible* masks, box ends inclusive):
- zones: horizontal thirds left/center/right of the centre x (left: cx < W/3, right:
  cx > 2W/3) and vertical thirds top/middle/bottom; "middle" is the central cell.
- superlatives: the region matching the description with the extreme centre x or y.
- directional relations a REL b: above: (cy_b - cy_a) > |cx_a - cx_b|; below, left of,
  right of analogously (the displacement is mostly along that direction).
- containment a "in"/"on" stuff b: a's centre lies strictly inside b's box.
- a landmark description must match exactly one region, otherwise nothing matches.

The generator only emits referents whose denotation is exactly the target AND whose
predicates hold with a margin: the target satisfies each with score >= margin and every
distractor fails with score <= -margin, so no expression hinges on a pixel. It also
avoids directional relations between an object and a stuff region containing it
("the sky left of the star" when the star is in the sky).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refexp.data.synthetic.scene import Region, Scene
from refexp.data.synthetic.vocabulary import (
    CONTAINMENT,
    RELATION_WORDS,
    RELATIONS,
    SIZE_WORDS,
    STUFF_PREPOSITIONS,
    SUPERLATIVE_WORDS,
    SUPERLATIVES,
    ZONE_NAMES,
    ZONES,
)

KINDS: tuple[str, ...] = ("attribute", "position", "relation")
ZONE_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left",), "right": ("on the right",),
    "top": ("at the top",), "bottom": ("at the bottom",),
    "top left": ("in the top left", "at the top left"), "top right": ("in the top right", "at the top right"),
    "bottom left": ("in the bottom left", "at the bottom left"),
    "bottom right": ("in the bottom right", "at the bottom right"),
    "middle": ("in the middle", "in the center"),
}


@dataclass(frozen=True)
class Description:
    category: str
    colour: str | None = None
    size: str | None = None

    def matches(self, region: Region) -> bool:
        return (region.category == self.category
                and (self.colour is None or region.colour == self.colour)
                and (self.size is None or region.size == self.size))


@dataclass(frozen=True)
class Referent:
    kind: str
    target: Description
    zone: str | None = None
    superlative: str | None = None
    relation: str | None = None  # one of RELATIONS, or CONTAINMENT
    landmark: Description | None = None


@dataclass(frozen=True)
class Expression:
    text: str
    kind: str
    referent: Referent
    region_index: int


class Geometry:
    """Per-scene arrays the evaluator and generator share (n = number of regions)."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self.regions = scene.regions
        n = len(self.regions)
        self.boxes = np.array([r.box for r in self.regions], dtype=np.float64).reshape(n, 4)
        self.cx = (self.boxes[:, 0] + self.boxes[:, 2]) / 2
        self.cy = (self.boxes[:, 1] + self.boxes[:, 3]) / 2
        self.is_stuff = np.array([r.kind == "stuff" for r in self.regions])
        w, h = scene.width, scene.height
        horizontal = {"left": w / 3 - self.cx, "right": self.cx - 2 * w / 3,
                      "center": np.minimum(self.cx - w / 3, 2 * w / 3 - self.cx)}
        vertical = {"top": h / 3 - self.cy, "bottom": self.cy - 2 * h / 3,
                    "middle": np.minimum(self.cy - h / 3, 2 * h / 3 - self.cy)}
        # zone scores (n, Z): > 0 inside the zone
        self.zone_scores = np.stack([
            np.minimum(horizontal[hz] if hz else np.inf, vertical[vz] if vz else np.inf)
            for hz, vz in (ZONES[z] for z in ZONE_NAMES)
        ], axis=1)
        dx = self.cx[:, None] - self.cx[None, :]  # (n, n): a minus b
        dy = self.cy[:, None] - self.cy[None, :]
        rel = {"above": -dy - np.abs(dx), "below": dy - np.abs(dx),
               "left of": -dx - np.abs(dy), "right of": dx - np.abs(dy)}
        x1, y1, x2, y2 = (self.boxes[:, i][None, :] for i in range(4))
        inside = np.minimum(np.minimum(self.cx[:, None] - x1, x2 - self.cx[:, None]),
                            np.minimum(self.cy[:, None] - y1, y2 - self.cy[:, None]))
        # containment only of objects in stuff
        inside = np.where((~self.is_stuff)[:, None] & self.is_stuff[None, :], inside, -np.inf)
        rel[CONTAINMENT] = inside
        for m in rel.values():
            np.fill_diagonal(m, -np.inf)
        self.relation_scores = rel
        # object inside stuff (either orientation) -> True; used to avoid odd directional pairs
        inside_any = inside > 0
        self.nested = inside_any | inside_any.T

    def matching(self, d: Description) -> np.ndarray:
        return np.array([d.matches(r) for r in self.regions], dtype=bool)


def denotation(ref: Referent, g: Geometry) -> list[int]:
    """Exact evaluation: indices of the regions the referent picks out."""
    selected = g.matching(ref.target)
    if ref.zone is not None:
        selected &= g.zone_scores[:, ZONE_NAMES.index(ref.zone)] > 0
    if ref.relation is not None:
        landmarks = np.flatnonzero(g.matching(ref.landmark))
        if len(landmarks) != 1:
            return []
        selected &= g.relation_scores[ref.relation][:, landmarks[0]] > 0
    if ref.superlative is not None and selected.any():
        axis, sign = SUPERLATIVES[ref.superlative]
        values = (g.cx if axis == "x" else g.cy) * sign
        best = values[selected].max()
        selected &= values == best
    return [int(i) for i in np.flatnonzero(selected)]


def descriptions_of(region: Region) -> list[Description]:
    """Every description that fits the region, shortest first."""
    if region.kind == "stuff":
        return [Description(region.category)]
    c, col, size = region.category, region.colour, region.size
    return [Description(c), Description(c, col), Description(c, size=size), Description(c, col, size)]


class ReferentGenerator:
    """All unambiguous, clear referents of one scene's regions, by kind."""

    def __init__(self, scene: Scene, margin: float | None = None):
        self.g = Geometry(scene)
        self.margin = margin if margin is not None else 0.04 * min(scene.width, scene.height)
        regs = self.g.regions
        self._descs = [descriptions_of(r) for r in regs]
        self._masks = {d: self.g.matching(d) for ds in self._descs for d in ds}
        self.unique_descriptions = [[d for d in ds if self._masks[d].sum() == 1] for ds in self._descs]
        self._has_unique = np.array([bool(u) for u in self.unique_descriptions])
        self._relation_names = (*RELATIONS, CONTAINMENT)
        self._relation_stack = np.stack([self.g.relation_scores[r] for r in self._relation_names])
        self._is_directional = np.array([r != CONTAINMENT for r in self._relation_names])

    def candidates(self, t: int, kind: str) -> list[Referent]:
        return getattr(self, f"_{kind}")(t)

    def _attribute(self, t: int) -> list[Referent]:
        return [Referent("attribute", d) for d in self.unique_descriptions[t]]

    def _position(self, t: int) -> list[Referent]:
        m, g = self.margin, self.g
        out = []
        for d in self._descs[t]:
            others = self._masks[d].copy()
            others[t] = False
            ok = (g.zone_scores[t] >= m) & np.all(g.zone_scores[others] <= -m, axis=0)
            out += [Referent("position", d, zone=ZONE_NAMES[z]) for z in np.flatnonzero(ok)]
            if others.any():
                for name, (axis, sign) in SUPERLATIVES.items():
                    values = (g.cx if axis == "x" else g.cy) * sign
                    if values[t] - values[others].max() >= m:
                        out.append(Referent("position", d, superlative=name))
        return out

    def _relation(self, t: int) -> list[Referent]:
        m, g = self.margin, self.g
        scores = self._relation_stack  # (R, n, n)
        landmark_ok = self._has_unique.copy()
        landmark_ok[t] = False
        # directional relations never pair an object with a stuff region containing it
        allowed = np.where(self._is_directional[:, None], ~g.nested[t][None, :], True) & landmark_ok[None, :]
        target_ok = (scores[:, t, :] >= m) & allowed  # (R, n landmarks)
        out = []
        for d in self._descs[t]:
            others = self._masks[d].copy()
            others[t] = False
            ok = target_ok & np.all(scores[:, others, :] <= -m, axis=1) if others.any() else target_ok
            for r, lm in zip(*np.nonzero(ok)):
                rel = self._relation_names[r]
                out += [Referent("relation", d, relation=rel, landmark=ld) for ld in self.unique_descriptions[lm]]
        return out


def _noun_phrase(d: Description, rng: np.random.Generator) -> str:
    words = []
    if d.size is not None:
        choices = SIZE_WORDS[d.size]
        words.append(choices[int(rng.integers(len(choices)))])
    if d.colour is not None:
        words.append(d.colour)
    words.append(d.category)
    return " ".join(words)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def realise(ref: Referent, rng: np.random.Generator) -> str:
    """Surface text; synonyms and the optional leading "the" are drawn from rng."""
    head = _noun_phrase(ref.target, rng)
    if ref.superlative is not None:
        return f"the {_pick(SUPERLATIVE_WORDS[ref.superlative], rng)} {head}"
    det = "the " if rng.random() < 0.75 else ""
    if ref.zone is not None:
        return f"{det}{head} {_pick(ZONE_PHRASES[ref.zone], rng)}"
    if ref.relation == CONTAINMENT:
        prep = _pick(STUFF_PREPOSITIONS[ref.landmark.category], rng)
        return f"{det}{head} {prep} the {ref.landmark.category}"
    if ref.relation is not None:
        return f"{det}{head} {_pick(RELATION_WORDS[ref.relation], rng)} the {_noun_phrase(ref.landmark, rng)}"
    return f"{det}{head}"


def normalise_mix(mix: dict[str, float]) -> np.ndarray:
    """Weights over KINDS from an {kind: weight} mapping; unknown kinds are an error."""
    unknown = sorted(set(mix) - set(KINDS))
    if unknown:
        raise ValueError(f"expression_mix: unknown kinds {unknown} (known: {list(KINDS)})")
    w = np.array([float(mix.get(k, 0.0)) for k in KINDS])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"expression_mix: weights must be >= 0 with a positive sum, got {mix}")
    return w / w.sum()


def expressions_for_region(gen: ReferentGenerator, t: int, count: int, weights: np.ndarray,
                           rng: np.random.Generator) -> list[Expression]:
    """Up to `count` distinct expressions for region t, kinds drawn by `weights`.

    Only kinds with a positive weight and a candidate are used; if there is none, the
    zero-weight kinds are, so that every region that can be referred to gets an
    expression. Distinct referents come first; when they run out a referent is realised
    again with other synonyms. Texts differing only by a leading "the" are the same.
    """
    pools = {k: gen.candidates(t, k) for k in KINDS}
    available = np.array([bool(pools[k]) for k in KINDS])
    usable = available & (weights > 0)
    if not usable.any():
        usable = available
    if not usable.any():
        return []
    unused = {k: list(range(len(pools[k]))) for k in KINDS}
    out: list[Expression] = []
    seen: set[str] = set()
    for _ in range(count * 6):
        if len(out) == count:
            break
        fresh = usable & np.array([bool(unused[k]) for k in KINDS])
        w = np.cumsum(np.where(fresh if fresh.any() else usable, np.maximum(weights, 1e-9), 0.0))
        kind = KINDS[min(int(np.searchsorted(w, rng.random() * w[-1], side="right")), len(KINDS) - 1)]
        if unused[kind]:
            ref = pools[kind][unused[kind].pop(int(rng.integers(len(unused[kind]))))]
        else:
            ref = pools[kind][int(rng.integers(len(pools[kind])))]
        text = realise(ref, rng)
        key = text.removeprefix("the ")
        if key in seen:
            continue
        if denotation(ref, gen.g) != [t]:  # the generator's margins imply this; keep it checked
            raise AssertionError(f"grammar produced an ambiguous referent {ref} for region {t}")
        seen.add(key)
        out.append(Expression(text=text, kind=kind, referent=ref, region_index=t))
    return out


def scene_expressions(scene: Scene, count: int, weights: np.ndarray,
                      rng: np.random.Generator) -> list[list[Expression]]:
    """Expressions for every region of the scene (list per region, in region order)."""
    gen = ReferentGenerator(scene)
    return [expressions_for_region(gen, r.index, count, weights, rng) for r in scene.regions]
