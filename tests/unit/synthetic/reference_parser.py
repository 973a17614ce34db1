"""An independent reader of the synthetic expressions, for tests.

It shares no code with refexp.data.synthetic.grammar: its own word lists, its own
parser (text -> constraints) and its own evaluator, which recomputes every region's
box and centre from the region's pixel mask. Semantics as documented in grammar.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = {"circle", "square", "triangle", "diamond", "star", "ring", "cross", "heart", "crescent"}
STUFF = {"sky", "water", "grass", "sand", "snow", "ground", "wall", "floor"}
COLOURS = {"red", "green", "blue", "yellow", "purple", "orange", "black", "white"}
SIZES = {"small": "small", "little": "small", "large": "large", "big": "large"}
SUPERLATIVES = {"leftmost": ("x", -1), "rightmost": ("x", 1), "topmost": ("y", -1), "highest": ("y", -1),
                "bottommost": ("y", 1), "lowest": ("y", 1)}
ZONES = {  # phrase -> (horizontal third, vertical third)
    "on the left": ("left", None), "on the right": ("right", None),
    "at the top": (None, "top"), "at the bottom": (None, "bottom"),
    "in the middle": ("center", "middle"), "in the center": ("center", "middle"),
}
for v in ("top", "bottom"):
    for h in ("left", "right"):
        for prep in ("in", "at"):
            ZONES[f"{prep} the {v} {h}"] = (h, v)
RELATIONS = {"above": "above", "over": "above", "below": "below", "under": "below", "beneath": "below",
             "left of": "left", "to the left of": "left", "right of": "right", "to the right of": "right"}


@dataclass(frozen=True)
class NounPhrase:
    noun: str
    colour: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class Parsed:
    head: NounPhrase
    superlative: tuple[str, int] | None = None
    zone: tuple[str | None, str | None] | None = None
    relation: str | None = None  # above/below/left/right/inside
    landmark: NounPhrase | None = None

    @property
    def kind(self) -> str:
        if self.relation is not None:
            return "relation"
        if self.zone is not None or self.superlative is not None:
            return "position"
        return "attribute"


class ParseError(ValueError):
    pass


def _noun_phrase(words: list[str]) -> tuple[NounPhrase, list[str]]:
    size = colour = None
    if words and words[0] in SIZES:
        size = SIZES[words.pop(0)]
    if words and words[0] in COLOURS:
        colour = words.pop(0)
    if not words or words[0] not in SHAPES | STUFF:
        raise ParseError(f"expected a noun, got {words}")
    return NounPhrase(words.pop(0), colour, size), words


def parse(text: str) -> Parsed:
    words = text.split()
    if words and words[0] == "the":
        words.pop(0)
    superlative = None
    if words and words[0] in SUPERLATIVES:
        superlative = SUPERLATIVES[words.pop(0)]
    head, rest = _noun_phrase(words)
    tail = " ".join(rest)
    if not tail:
        return Parsed(head, superlative=superlative)
    if tail in ZONES:
        return Parsed(head, superlative=superlative, zone=ZONES[tail])
    for phrase in sorted(RELATIONS, key=len, reverse=True):
        if tail.startswith(phrase + " the "):
            landmark, left = _noun_phrase(tail[len(phrase) + 5:].split())
            if left:
                raise ParseError(f"trailing words {left} in {text!r}")
            return Parsed(head, superlative=superlative, relation=RELATIONS[phrase], landmark=landmark)
    if rest[0] in ("in", "on") and rest[1:2] == ["the"] and len(rest) == 3 and rest[2] in STUFF:
        return Parsed(head, superlative=superlative, relation="inside", landmark=NounPhrase(rest[2]))
    raise ParseError(f"cannot parse {text!r}")


@dataclass(frozen=True)
class Facts:
    """What the evaluator knows of a region: its words and its pixels."""

    noun: str
    colour: str | None
    size: str | None
    is_stuff: bool
    mask: np.ndarray

    def box(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())

    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box()
        return (x1 + x2) / 2, (y1 + y2) / 2


def _fits(np_: NounPhrase, f: Facts) -> bool:
    return f.noun == np_.noun and np_.colour in (None, f.colour) and np_.size in (None, f.size)


def _third(value: float, extent: int) -> int:
    return 0 if value < extent / 3 else (2 if value > 2 * extent / 3 else 1)


def referents(parsed: Parsed, facts: list[Facts], width: int, height: int) -> list[int]:
    """Indices of the regions the parsed expression denotes."""
    chosen = [i for i, f in enumerate(facts) if _fits(parsed.head, f)]
    if parsed.zone is not None:
        h, v = parsed.zone
        hpos = {"left": 0, "center": 1, "right": 2}
        vpos = {"top": 0, "middle": 1, "bottom": 2}
        chosen = [i for i in chosen
                  if (h is None or _third(facts[i].centre()[0], width) == hpos[h])
                  and (v is None or _third(facts[i].centre()[1], height) == vpos[v])]
    if parsed.relation is not None:
        marks = [i for i, f in enumerate(facts) if _fits(parsed.landmark, f)]
        if len(marks) != 1:
            return []
        lm = facts[marks[0]]
        lx, ly = lm.centre()
        x1, y1, x2, y2 = lm.box()
        kept = []
        for i in chosen:
            if i == marks[0]:
                continue
            cx, cy = facts[i].centre()
            dx, dy = cx - lx, cy - ly
            ok = {"above": -dy > abs(dx), "below": dy > abs(dx), "left": -dx > abs(dy), "right": dx > abs(dy),
                  "inside": (lm.is_stuff and not facts[i].is_stuff and x1 < cx < x2 and y1 < cy < y2)}[parsed.relation]
            if ok:
                kept.append(i)
        chosen = kept
    if parsed.superlative is not None and chosen:
        axis, sign = parsed.superlative
        key = [sign * facts[i].centre()[0 if axis == "x" else 1] for i in chosen]
        best = max(key)
        chosen = [i for i, k in zip(chosen, key) if k == best]
    return chosen
