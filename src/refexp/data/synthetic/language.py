"""Scene-level language: COCO-style captions and Visual Genome-style region descriptions.

Both come from a small set of templates with synonym choices, so that the same
phrasing recurs across images (what BLEU/METEOR mining of similar region
descriptions needs), while the content (colours, shapes, stuff, spatial words)
follows each scene's geometry. Region descriptions cover 1-3 objects (the box is
the union of their boxes, grown with context to at least a tenth of the image as the
miners' area filter wants), an object and a stuff region, or stuff alone, so the
mining filters have single-object and stuff-only phrases to drop. Each also carries
its region graph (objects mentioned, relationships stated) for region_graphs.json.
Multi-object phrases name their objects coarsely ("the red shape", "the circle") and
in one canonical word order most of the time, so the same phrase recurs in other
images that hold the same kind of pair: at the default 400 images the miners find a
few hundred query sets in every split (see the constants below for the paraphrases).
The VG-only scenes beyond the shared world have their own, wider and terser grammar
(`vg_only_region_descriptions`, below).
"""
from __future__ import annotations

import itertools
import math
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
DIRECTION_NAMES = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}

# Region descriptions (measured with the miners' BLEU-2 and METEOR 1.5 on these templates):
# two phrases that differ only in their leading article pass both thresholds (BLEU-2 > 0.7,
# METEOR > 0.6); a missing leading article, or one other word inside the phrase (article,
# relation word, colour or shape), usually passes BLEU-2 but not METEOR, which penalises the
# broken alignment (a few such pairs pass, e.g. "on the grass"/"on the ground"); "beside" or
# "near" for "next to" fails BLEU-2 but passes METEOR (a synonym). So each multi-object phrase
# is mostly canonical (and recurs across images that hold the same kind of pair), and the
# paraphrases give each mining step something to drop.
VG_KIND_WEIGHTS = {"pair": 0.4, "triple": 0.1, "object_stuff": 0.25, "single": 0.12, "stuff": 0.13}
# How a multi-object phrase names its objects ("the red shape", "the circle", "the red circle").
NAMING_WEIGHTS = {"colour": 0.55, "shape": 0.35, "full": 0.1}
LEADING_ARTICLES = {"the": 0.45, "a": 0.45, "": 0.1}
INNER_ARTICLES = {"the": 0.8, "a": 0.2}
# Canonical relation phrase -> its paraphrases (used with PARAPHRASE_PROBABILITY).
RELATION_PARAPHRASES = {"above": ("over",), "below": ("under",), "to the left of": ("left of",),
                        "to the right of": ("right of",), "next to": ("beside", "near")}
PARAPHRASE_PROBABILITY = 0.15
# A pair is said with the upper or left object first, with this probability the other way round.
FLIP_PROBABILITY = 0.2
NEAR_PROBABILITY = 0.3  # of saying "next to" for a pair closer than NEAR_DISTANCE
NEAR_DISTANCE = 0.35  # of the image's shorter side, between centres
# Objects whose union box covers more of the image than this are not described together.
MAX_UNION_AREA = 0.8
# A region of several objects (or an object in stuff) includes context around them, up to a
# random share of the image in this range when their own box is smaller; so are single objects
# with SINGLE_CONTEXT_PROBABILITY (those reach the several-objects filter, the rest the area filter).
CONTEXT_AREA = (0.12, 0.2)
SINGLE_CONTEXT_PROBABILITY = 0.5

@dataclass(frozen=True)
class RegionDescription:
    phrase: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 inclusive; contains its regions' boxes
    region_indices: tuple[int, ...]  # scene regions it covers (an object_stuff: the object)
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
    scores = {rel: g.relation_scores[rel][a, b] for rel in DIRECTION_NAMES}
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


def _weighted(weights: dict[str, float], rng: np.random.Generator) -> str:
    """A key drawn with probability proportional to its weight (one uniform draw)."""
    u = rng.random() * sum(weights.values())
    for key, w in weights.items():
        u -= w
        if u < 0:
            return key
    return key  # u hit the total exactly (float rounding)


def _context_box(box: tuple[int, int, int, int], width: int, height: int,
                 min_area: float) -> tuple[int, int, int, int]:
    """The smallest near-square box around `box` (inside the image) with at least `min_area` pixels."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1 + 1, y2 - y1 + 1
    if w * h >= min_area:
        return box
    new_w = min(width, max(w, math.ceil(math.sqrt(min_area))))
    new_h = min(height, max(h, math.ceil(min_area / new_w)))
    new_w = min(width, max(new_w, math.ceil(min_area / new_h)))
    # centred on the box, shifted to stay inside the image while still containing the box
    nx1 = min(max(round((x1 + x2) / 2 - (new_w - 1) / 2), x2 - new_w + 1, 0), x1, width - new_w)
    ny1 = min(max(round((y1 + y2) / 2 - (new_h - 1) / 2), y2 - new_h + 1, 0), y1, height - new_h)
    return int(nx1), int(ny1), int(nx1 + new_w - 1), int(ny1 + new_h - 1)


def _area_share(box: tuple[int, int, int, int], scene: Scene) -> float:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1) / (scene.width * scene.height)


def region_descriptions(scene: Scene, count: int, rng: np.random.Generator,
                        geometry: Geometry | None = None) -> list[RegionDescription]:
    """`count` Visual Genome-style region descriptions of the scene.

    `rng` should be the image's own description generator (generate.py), so that the
    descriptions can change without moving anything else in the world. Pairs and
    triples are not described twice in one image. `geometry`: the scene's, if already built.
    """
    g = geometry if geometry is not None else Geometry(scene)
    objects = scene.objects
    kinds = [k for k in VG_KIND_WEIGHTS if k != "pair" or len(objects) >= 2]
    kinds = [k for k in kinds if k != "triple" or len(objects) >= 3]
    kinds = [k for k in kinds if k not in ("single", "object_stuff") or objects]
    used: set[tuple[int, ...]] = set()
    out: list[RegionDescription] = []
    for _ in range(count):
        kind = _weighted({k: VG_KIND_WEIGHTS[k] for k in kinds}, rng)
        described = None
        if kind in ("pair", "triple"):
            described = _describe_group(kind, scene, g, used, rng)
            kind = kind if described else "object_stuff" if objects else "stuff"
        if described is None:
            described = _describe_one(kind, scene, g, rng)
        out.append(described)
    return out


def _context(box: tuple[int, int, int, int], scene: Scene, rng: np.random.Generator) -> tuple[int, int, int, int]:
    share = rng.uniform(*CONTEXT_AREA)
    return _context_box(box, scene.width, scene.height, share * scene.width * scene.height)


def _name(o: Region, naming: str) -> str:
    return {"colour": f"{o.colour} shape", "shape": o.category, "full": f"{o.colour} {o.category}"}[naming]


def _relation(canonical: str, rng: np.random.Generator) -> str:
    return _pick(RELATION_PARAPHRASES[canonical], rng) if rng.random() < PARAPHRASE_PROBABILITY else canonical


def _describe_one(kind: str, scene: Scene, g: Geometry, rng: np.random.Generator) -> RegionDescription:
    objects, stuff = scene.objects, scene.stuff
    if kind == "stuff":
        s = _pick(stuff, rng)
        return RegionDescription(_pick(STUFF_PHRASES[s.category], rng), s.box, (s.index,), kind, (s.index,))
    o = _pick(objects, rng)
    if kind == "single":
        noun = _object_noun(o, with_size=rng.random() < 0.3)
        phrase = _pick((_article(_pick(("", "a", "the"), rng), noun), f"{_article('a', noun)} shape"), rng)
        box = _context(o.box, scene, rng) if rng.random() < SINGLE_CONTEXT_PROBABILITY else o.box
        return RegionDescription(phrase, box, (o.index,), kind, (o.index,))
    # object_stuff: the stuff it is in, mostly, else another stuff region by direction
    inside = [s for s in stuff if g.relation_scores["in"][o.index, s.index] > 0]
    s = inside[0] if inside and rng.random() < 0.8 else _pick(stuff, rng)
    if g.relation_scores["in"][o.index, s.index] > 0:
        prepositions = STUFF_PREPOSITIONS[s.category]
        rel = _pick(prepositions[1:], rng) if len(prepositions) > 1 and rng.random() < PARAPHRASE_PROBABILITY \
            else prepositions[0]
    else:
        rel = _relation(DIRECTION_NAMES[_direction(g, o.index, s.index)], rng)
    naming = _weighted(NAMING_WEIGHTS, rng)
    phrase = f"{_article(_weighted(LEADING_ARTICLES, rng), _name(o, naming))} {rel} the {s.category}"
    return RegionDescription(phrase, _context(o.box, scene, rng), (o.index,), kind, (o.index, s.index),
                             ((o.index, rel, s.index),))


def _new_group(kind: str, scene: Scene, used: set[tuple[int, ...]], rng: np.random.Generator) -> list | None:
    """A pair or triple of objects not yet described together whose union box is not too large (marked
    used), or None when none is left."""
    objects = scene.objects
    size = 2 if kind == "pair" else 3
    groups = [c for c in itertools.combinations(range(len(objects)), size)
              if c not in used and _area_share(_union_box([objects[i] for i in c]), scene) <= MAX_UNION_AREA]
    if not groups:
        return None
    group = groups[int(rng.integers(len(groups)))]
    used.add(group)
    return [objects[i] for i in group]


def _describe_group(kind: str, scene: Scene, g: Geometry, used: set[tuple[int, ...]],
                    rng: np.random.Generator) -> RegionDescription | None:
    """A pair or triple of objects not yet described together, or None when none is left."""
    chosen = _new_group(kind, scene, used, rng)
    if chosen is None:
        return None
    naming = _weighted(NAMING_WEIGHTS, rng)
    if kind == "pair":
        a, b = chosen
        direction = _direction(g, a.index, b.index)
        if direction in ("below", "right of"):  # canonical order: the upper or left object first
            a, b, direction = b, a, OPPOSITE[direction]
        dist = np.hypot(g.cx[a.index] - g.cx[b.index], g.cy[a.index] - g.cy[b.index])
        if dist < NEAR_DISTANCE * min(scene.width, scene.height) and rng.random() < NEAR_PROBABILITY:
            canonical = "next to"
        elif rng.random() < FLIP_PROBABILITY:
            a, b, canonical = b, a, DIRECTION_NAMES[OPPOSITE[direction]]
        else:
            canonical = DIRECTION_NAMES[direction]
        rel = _relation(canonical, rng)
        first = _article(_weighted(LEADING_ARTICLES, rng), _name(a, naming))
        second = _article(_weighted(INNER_ARTICLES, rng), _name(b, naming))
        phrase = f"{first} {rel} {second}"
        chosen, relationships = [a, b], ((a.index, rel, b.index),)
    else:
        nouns = [_article(_weighted(LEADING_ARTICLES if k == 0 else INNER_ARTICLES, rng), _name(o, naming))
                 for k, o in enumerate(chosen)]
        template = int(rng.integers(3))
        phrase = (_join(nouns), f"{nouns[0]} and {nouns[1]} near {nouns[2]}", f"three shapes: {_join(nouns)}")[template]
        a, b, c = (o.index for o in chosen)
        relationships = ((a, "near", c), (b, "near", c)) if template == 1 else ()
    indices = tuple(o.index for o in chosen)
    return RegionDescription(phrase, _context(_union_box(chosen), scene, rng), indices, kind, indices, relationships)




# VG-only scenes (generate.py) are described with a wider grammar than the shared images:
# more ways to name an object (bare shape, colour, colour and shape, with size), groups of
# identical objects with a count ("two red circles"), where a pair is ("... on grass"),
# and mostly VG's terse style, without articles ("circle above square", "red star in
# sky"), sometimes "the" throughout. The coarse namings recur across images (the mined
# sets); the fine ones are mostly unique (the retrieval corpus's other regions). Short
# phrases and few surface variants of one content keep low the number of phrase pairs
# that pass BLEU-2 but not METEOR, which the miners must score with METEOR: a one-word
# change passes BLEU-2 > 0.7 in a phrase of 6 words or more, at either end of one of 4-5,
# and never in one of 3 (see build_region_benchmark's metrics for what this yields).
VG_ONLY_KIND_WEIGHTS = {"pair": 0.36, "group": 0.08, "triple": 0.06, "object_stuff": 0.26, "single": 0.14,
                        "stuff": 0.1}
# How objects are named, per kind (never "red circle" for an object in stuff, nor "red shape" in a
# pair: those phrase spaces are dense enough for many one-word neighbours, too sparse for sets).
VG_ONLY_NAMING_WEIGHTS = {"shape": 0.6, "full": 0.2, "sized": 0.2}
VG_ONLY_OBJECT_STUFF_NAMING_WEIGHTS = {"shape": 0.55, "colour": 0.25, "sized": 0.2}
VG_ONLY_ARTICLES = {"": 0.8, "the": 0.2}  # fine namings only (see _determiner)
VG_ONLY_PARAPHRASE_PROBABILITY = 0.05
# Short relation words, as VG's phrases have them ("cup left of plate").
VG_ONLY_DIRECTIONS = {"above": "above", "below": "below", "left of": "left of", "right of": "right of"}
VG_ONLY_PARAPHRASES = {"above": ("over",), "below": ("under",), "left of": ("beside",),
                       "right of": ("beside",), "next to": ("beside", "near")}
VG_ONLY_OTHER_PREPOSITION_PROBABILITY = 0.3
# A finely named pair (full, sized) also says where it is ("... on grass") with this probability.
VG_ONLY_PLACE_PROBABILITY = 0.5
# An object in stuff is said to be in the stuff holding its centre, else above/below another.
VG_ONLY_IN_STUFF_PROBABILITY = 0.85
# A group of identical objects is related to another object (else: to the stuff it is in).
VG_ONLY_GROUP_RELATION_PROBABILITY = 0.6


def _vg_name(o: Region, naming: str, plural: bool = False) -> str:
    shape = SHAPE_PLURALS[o.category] if plural else o.category
    return {"shape": shape, "colour": f"{o.colour} {'shapes' if plural else 'shape'}", "full": f"{o.colour} {shape}",
            "sized": f"{o.size} {o.colour} {shape}"}[naming]


def _determiner(naming: str, rng: np.random.Generator) -> str:
    """The phrase's article: none for the coarse namings (their phrases stay short), else
    drawn from VG_ONLY_ARTICLES."""
    det = _weighted(VG_ONLY_ARTICLES, rng)
    return det if naming in ("full", "sized") else ""


def _holder(o: Region, scene: Scene, g: Geometry) -> Region | None:
    """The stuff region whose box holds the object's centre (the first, in stuff order)."""
    for s in scene.stuff:
        if g.relation_scores["in"][o.index, s.index] > 0:
            return s
    return None


def _place_words(stuff: Region, det: str, rng: np.random.Generator) -> tuple[str, str]:
    """(preposition, "on grass" / "on the grass"); the stuff's other preposition ("in grass")
    with VG_ONLY_OTHER_PREPOSITION_PROBABILITY."""
    prepositions = STUFF_PREPOSITIONS[stuff.category]
    prep = prepositions[0]
    if len(prepositions) > 1 and rng.random() < VG_ONLY_OTHER_PREPOSITION_PROBABILITY:
        prep = prepositions[1]
    return prep, f"{prep} {_article(det, stuff.category)}"


def vg_only_region_descriptions(scene: Scene, count: int, rng: np.random.Generator,
                                geometry: Geometry | None = None) -> list[RegionDescription]:
    """`count` region descriptions of a VG-only scene, in the wider grammar above.

    The kinds, boxes and region graphs of `region_descriptions`, plus "group": 2-3
    identical objects counted ("two red circles above blue square"). Pairs, triples and
    groups are not described twice in one image.
    """
    g = geometry if geometry is not None else Geometry(scene)
    objects = scene.objects
    twins: dict[tuple[str, str], list[Region]] = {}
    for o in objects:
        twins.setdefault((o.category, o.colour), []).append(o)
    groups = [members for members in twins.values() if len(members) >= 2]
    kinds = [k for k in VG_ONLY_KIND_WEIGHTS if (k != "pair" or len(objects) >= 2)
             and (k != "triple" or len(objects) >= 3) and (k != "group" or groups)
             and (k not in ("single", "object_stuff") or objects)]
    used: set[tuple[int, ...]] = set()
    out: list[RegionDescription] = []
    for _ in range(count):
        kind = _weighted({k: VG_ONLY_KIND_WEIGHTS[k] for k in kinds}, rng)
        described = None
        if kind == "group":
            described = _vg_group(scene, g, groups, used, rng)
        elif kind in ("pair", "triple"):
            described = _vg_pair_or_triple(kind, scene, g, used, rng)
        if described is None:
            kind = kind if kind in ("single", "stuff", "object_stuff") else "object_stuff" if objects else "stuff"
            described = (_vg_object_stuff(scene, g, rng) if kind == "object_stuff"
                         else _describe_one(kind, scene, g, rng))
        out.append(described)
    return out


def _vg_relation(g: Geometry, a: Region, b: Region, scene: Scene,
                 rng: np.random.Generator) -> tuple[Region, str, Region]:
    """(first, relation words, second): mostly the upper or left object first."""
    direction = _direction(g, a.index, b.index)
    if direction in ("below", "right of"):
        a, b, direction = b, a, OPPOSITE[direction]
    dist = np.hypot(g.cx[a.index] - g.cx[b.index], g.cy[a.index] - g.cy[b.index])
    if dist < NEAR_DISTANCE * min(scene.width, scene.height) and rng.random() < NEAR_PROBABILITY:
        canonical = "next to"
    elif rng.random() < FLIP_PROBABILITY:
        a, b, canonical = b, a, VG_ONLY_DIRECTIONS[OPPOSITE[direction]]
    else:
        canonical = VG_ONLY_DIRECTIONS[direction]
    rel = _pick(VG_ONLY_PARAPHRASES[canonical], rng) if rng.random() < VG_ONLY_PARAPHRASE_PROBABILITY else canonical
    return a, rel, b


def _vg_pair_or_triple(kind: str, scene: Scene, g: Geometry, used: set[tuple[int, ...]],
                       rng: np.random.Generator) -> RegionDescription | None:
    chosen = _new_group(kind, scene, used, rng)
    if chosen is None:
        return None
    naming = _weighted(VG_ONLY_NAMING_WEIGHTS, rng)
    det = _determiner(naming, rng)
    if kind == "pair":
        a, rel, b = _vg_relation(g, *chosen, scene, rng)
        phrase = f"{_article(det, _vg_name(a, naming))} {rel} {_article(det, _vg_name(b, naming))}"
        chosen, relationships, graph = [a, b], [(a.index, rel, b.index)], [a.index, b.index]
        stuff = _holder(b, scene, g) if naming in ("full", "sized") else None
        if stuff is not None and rng.random() < VG_ONLY_PLACE_PROBABILITY:
            prep, words = _place_words(stuff, det, rng)
            phrase += " " + words
            relationships.append((b.index, prep, stuff.index))
            graph.append(stuff.index)
    else:
        nouns = [_article(det, _vg_name(o, naming)) for o in chosen]
        template = int(rng.integers(2))
        phrase = (_join(nouns), f"{nouns[0]} and {nouns[1]} near {nouns[2]}")[template]
        a, b, c = (o.index for o in chosen)
        relationships = [(a, "near", c), (b, "near", c)] if template == 1 else []
        graph = [a, b, c]
    indices = tuple(o.index for o in chosen)
    return RegionDescription(phrase, _context(_union_box(chosen), scene, rng), indices, kind, tuple(graph),
                             tuple(relationships))


def _vg_group(scene: Scene, g: Geometry, groups: list[list[Region]], used: set[tuple[int, ...]],
              rng: np.random.Generator) -> RegionDescription | None:
    """Identical objects counted, related to another object or to the stuff they are in."""
    members = groups[int(rng.integers(len(groups)))]
    key = tuple(o.index for o in members)
    if key in used:
        return None
    naming = _pick(("shape", "colour", "full"), rng)
    det = _determiner(naming, rng)
    counted = f"{NUMBER_WORDS[len(members)]} {_vg_name(members[0], naming, plural=True)}"
    others = [o for o in scene.objects if o.index not in key]
    covered = list(members)
    if others and rng.random() < VG_ONLY_GROUP_RELATION_PROBABILITY:
        other = others[int(rng.integers(len(others)))]
        rel = VG_ONLY_DIRECTIONS[_direction(g, members[0].index, other.index)]
        phrase = f"{counted} {rel} {_article(det, _vg_name(other, naming))}"
        relationships = tuple((o.index, rel, other.index) for o in members)
        graph = (*key, other.index)
        covered.append(other)
    else:
        stuff = _holder(members[0], scene, g)
        if stuff is None:
            return None
        prep, words = _place_words(stuff, det, rng)
        phrase = f"{counted} {words}"
        relationships = tuple((o.index, prep, stuff.index) for o in members)
        graph = (*key, stuff.index)
    if _area_share(_union_box(covered), scene) > MAX_UNION_AREA:
        return None
    used.add(key)
    indices = tuple(o.index for o in covered)
    return RegionDescription(phrase, _context(_union_box(covered), scene, rng), indices, "group", graph, relationships)


def _vg_object_stuff(scene: Scene, g: Geometry, rng: np.random.Generator) -> RegionDescription:
    o = _pick(scene.objects, rng)
    naming = _weighted(VG_ONLY_OBJECT_STUFF_NAMING_WEIGHTS, rng)
    det = _determiner(naming, rng)
    holder = _holder(o, scene, g)
    vertical = [s for s in scene.stuff if s is not holder and _direction(g, o.index, s.index) in ("above", "below")]
    if holder is not None and (not vertical or rng.random() < VG_ONLY_IN_STUFF_PROBABILITY):
        s = holder
        rel, words = _place_words(s, det, rng)
    else:  # above water, below sky
        s = _pick(vertical or scene.stuff, rng)
        rel = VG_ONLY_DIRECTIONS[_direction(g, o.index, s.index)]
        words = f"{rel} {_article(det, s.category)}"
    phrase = f"{_article(det, _vg_name(o, naming))} {words}"
    return RegionDescription(phrase, _context(o.box, scene, rng), (o.index,), "object_stuff", (o.index, s.index),
                             ((o.index, rel, s.index),))
