"""Scene-level language: COCO-style captions and Visual Genome-style region descriptions.

Both come from a small set of templates with synonym choices, so that the same
phrasing recurs across images (what BLEU/METEOR mining of similar region
descriptions needs), while the content (colours, shapes, stuff, spatial words)
follows each scene's geometry. Region descriptions cover 1-3 objects (the box is
the union of their boxes), an object and a stuff region, or stuff alone, so the
mining filters have single-object and stuff-only phrases to drop. Each also carries
its region graph (objects mentioned, relationships stated) for region_graphs.json.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refexp.data.synthetic.grammar import Geometry
from refexp.data.synthetic.scene import Region, Scene
from refexp.data.synthetic.vocabulary import SHAPE_PLURALS, STUFF_PREPOSITIONS

NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
STUFF_PHRASES: dict[str, tuple[str, ...]] = {
    "sky": ("the sky", "blue sky", "a clear blue sky", "the blue sky"),
    "water": ("the water", "blue water", "calm water", "the sea"),
    "grass": ("the grass", "green grass", "a grassy field", "the green grass"),
    "sand": ("the sand", "sandy beach", "the beach", "yellow sand"),
    "snow": ("the snow", "white snow", "snowy ground", "the white snow"),
    "ground": ("the ground", "brown dirt", "the dirt ground", "bare ground"),
    "wall": ("the wall", "a brick wall", "the brick wall", "grey brick wall"),
    "floor": ("the floor", "wooden floor", "the wooden floor", "a wood floor"),
}
NEAR_WORDS = ("next to", "beside", "near")
DIRECTION_WORDS = {
    "above": ("above", "over"), "below": ("below", "under"),
    "left of": ("to the left of", "left of"), "right of": ("to the right of", "right of"),
}
VG_KIND_WEIGHTS = {"pair": 0.4, "triple": 0.1, "object_stuff": 0.2, "single": 0.15, "stuff": 0.15}


@dataclass(frozen=True)
class RegionDescription:
    phrase: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 inclusive
    region_indices: tuple[int, ...]  # scene regions it covers
    kind: str  # pair | triple | object_stuff | single | stuff
    # its region graph: the regions it mentions and (subject, predicate, object) relationships
    graph_objects: tuple[int, ...] = ()
    relationships: tuple[tuple[int, str, int], ...] = ()


def _pick(options, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _object_noun(o: Region, with_size: bool = False) -> str:
    words = ([o.size] if with_size else []) + [o.colour, o.category]
    return " ".join(words)


def _article(det: str, noun: str) -> str:
    if det == "a" and noun[0] in "aeiou":
        return "an " + noun
    return f"{det} {noun}" if det else noun


def _union_box(regions: list[Region]) -> tuple[int, int, int, int]:
    boxes = np.array([r.box for r in regions])
    return (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))


def _direction(g: Geometry, a: int, b: int) -> str:
    """The dominant direction of a's centre from b's (always one of the four)."""
    scores = {rel: g.relation_scores[rel][a, b] for rel in DIRECTION_WORDS}
    return max(scores, key=lambda rel: (scores[rel], rel))


def captions(scene: Scene, count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct-as-possible captions describing the whole scene."""
    groups: dict[tuple[str, str], int] = {}
    for o in scene.objects:
        groups[(o.colour, o.category)] = groups.get((o.colour, o.category), 0) + 1
    stuff = [s.category for s in scene.stuff]
    indoor = "wall" in stuff
    grounds = [s for s in stuff if s not in ("sky", "wall")]
    g = Geometry(scene)
    in_sky = [o for o in scene.objects
              if "sky" in stuff and g.relation_scores["in"][o.index, stuff.index("sky")] > 0]
    out: list[str] = []
    keys = list(groups)
    for _ in range(count * 4):
        if len(out) == count:
            break
        order = [keys[i] for i in rng.permutation(len(keys))]
        mentioned = order[: int(rng.integers(1, min(3, len(order)) + 1))] if order else []
        objs = _join([f"{NUMBER_WORDS[groups[k]]} {k[0]} {SHAPE_PLURALS[k[1]] if groups[k] > 1 else k[1]}"
                      for k in mentioned]) if mentioned else "nothing"
        if mentioned and groups[mentioned[0]] == 1 and objs.startswith("a ") and objs[2] in "aeiou":
            objs = "an " + objs[2:]
        n = len(scene.objects)
        shapes = f"{NUMBER_WORDS.get(n, 'many')} shapes" if n > 1 else ("one shape" if n else "no shapes")
        ground = " and ".join(_pick(STUFF_PHRASES[s], rng) for s in grounds)
        if indoor:
            templates = [
                f"{objs} in front of {_pick(STUFF_PHRASES['wall'], rng)}",
                f"{objs} and {ground}",
                f"a room with {objs}",
                f"{shapes} in a room",
                f"{objs} in a room with {ground} and {_pick(STUFF_PHRASES['wall'], rng)}",
            ]
        else:
            templates = [
                f"{objs} on {ground} under the sky",
                f"a picture of {objs} and {ground}",
                f"{shapes} over {ground}",
                f"{objs} and {_pick(STUFF_PHRASES['sky'], rng)}",
            ]
            if in_sky:
                o = in_sky[int(rng.integers(len(in_sky)))]
                templates.append(f"{_article('a', o.colour + ' ' + o.category)} in the sky above {ground}")
        if not mentioned:
            templates = [f"{shapes} on {ground}", f"a picture of {ground}"]
        text = _pick(templates, rng)
        text = text[0].upper() + text[1:] if rng.random() < 0.5 else text
        if text not in out:
            out.append(text)
    while len(out) < count:  # tiny scenes can run out of distinct phrasings
        out.append(out[len(out) % max(1, len(out))] if out else "a picture of shapes")
    return out


def region_descriptions(scene: Scene, count: int, rng: np.random.Generator) -> list[RegionDescription]:
    """`count` Visual Genome-style region descriptions of the scene."""
    g = Geometry(scene)
    objects = scene.objects
    stuff = scene.stuff
    kinds = [k for k in VG_KIND_WEIGHTS if k not in ("pair",) or len(objects) >= 2]
    kinds = [k for k in kinds if k != "triple" or len(objects) >= 3]
    kinds = [k for k in kinds if k not in ("single", "object_stuff") or objects]
    w = np.array([VG_KIND_WEIGHTS[k] for k in kinds])
    w = w / w.sum()
    out: list[RegionDescription] = []
    for _ in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=w))]
        out.append(_describe(kind, scene, g, objects, stuff, rng))
    return out


def _describe(kind: str, scene: Scene, g: Geometry, objects: list[Region], stuff: list[Region],
              rng: np.random.Generator) -> RegionDescription:
    det = lambda: _pick(("", "a", "the"), rng)  # noqa: E731 - tiny local helper
    if kind == "stuff":
        s = _pick(stuff, rng)
        return RegionDescription(_pick(STUFF_PHRASES[s.category], rng), s.box, (s.index,), kind, (s.index,))
    if kind == "single":
        o = _pick(objects, rng)
        noun = _object_noun(o, with_size=rng.random() < 0.3)
        phrase = _pick((_article(det(), noun), f"{_article('a', noun)} shape"), rng)
        return RegionDescription(phrase, o.box, (o.index,), kind, (o.index,))
    if kind == "object_stuff":
        o = _pick(objects, rng)
        inside = [s for s in stuff if g.relation_scores["in"][o.index, s.index] > 0]
        s = inside[0] if inside and rng.random() < 0.6 else _pick(stuff, rng)
        if g.relation_scores["in"][o.index, s.index] > 0:
            rel = _pick(STUFF_PREPOSITIONS[s.category], rng)
        else:
            rel = _pick(DIRECTION_WORDS[_direction(g, o.index, s.index)], rng)
        phrase = f"{_article(det(), _object_noun(o))} {rel} the {s.category}"
        return RegionDescription(phrase, o.box, (o.index,), kind, (o.index, s.index), ((o.index, rel, s.index),))
    picks = rng.permutation(len(objects))[: 2 if kind == "pair" else 3]
    chosen = [objects[i] for i in picks]
    if kind == "pair":
        a, b = chosen
        dist = np.hypot(g.cx[a.index] - g.cx[b.index], g.cy[a.index] - g.cy[b.index])
        if dist < 0.35 * min(scene.width, scene.height) and rng.random() < 0.5:
            rel = _pick(NEAR_WORDS, rng)
        else:
            rel = _pick(DIRECTION_WORDS[_direction(g, a.index, b.index)], rng)
        second = _article(_pick(("a", "the"), rng), _object_noun(b))
        phrase = f"{_article(det(), _object_noun(a))} {rel} {second}"
        relationships = ((a.index, rel, b.index),)
    else:
        nouns = [_article(_pick(("a", "the"), rng), _object_noun(o)) for o in chosen]
        template = int(rng.integers(3))
        phrase = (_join(nouns), f"{nouns[0]} and {nouns[1]} near {nouns[2]}", f"three shapes: {_join(nouns)}")[template]
        a, b, c = (o.index for o in chosen)
        relationships = ((a, "near", c), (b, "near", c)) if template == 1 else ()
    indices = tuple(o.index for o in chosen)
    return RegionDescription(phrase, _union_box(chosen), indices, kind, indices, relationships)
