"""Referring expressions of the refer API layout (lichengunc/refer) over the world's COCO objects.

Two styles, each over every object of every image (scene.objects, the COCO instances; stuff is
never a ref's target, though it may be a landmark: "the red circle in the sky"):

- "unc" (UNC-Ref: refcoco/refs(unc).p): short expressions, the grammar's referents as
  grammar.py makes them (minimal descriptions), kinds drawn by an attribute- and
  position-heavy mix (default attribute 1.0, position 1.0, relation 0.2).
- "google" (G-Ref: refcocog/refs(google).p): longer expressions. The grammar's referent gets
  the target's and the landmark's FULL description (size, colour and category: a more
  specific description matches a subset holding the same region, so the referent still
  denotes that one region; `full_referent` checks it with `denotation`), the kinds are drawn by
  a relation-heavy mix (default 0.2, 0.6, 1.0), and the surface has a relative clause ("the
  large red circle that is above the small blue square", "the big green star which is on the
  left"; attribute and superlative referents have none).

Per style, `expressions_per_object` distinct expressions per object (fewer where the grammar
has fewer; an object the grammar cannot single out gets no ref), and `clause` switches the
relative clause on or off.

Splits are by image (as UNC-Ref's are), from each image's world split (train/val/test):
- UNC: train, val, and the world's test images cut in two by a seeded permutation into testA
  and testB (in the real UNC-Ref testA holds the people and testB the other objects; here the
  cut is random: the world has no people);
- G-Ref: train and val, where val holds the world's val AND test images: the paper evaluates
  G-Ref on its validation set, "since its test set has not been released" (Sec. 3, footnote 1).

Held-out synonyms (the paper's claim that fixed GloVe vectors help with words never seen in
training): a share `heldout_synonym_fraction` of the non-train expressions (val, testA, testB)
have every word of vocabulary.HELDOUT_SYNONYMS replaced by its synonym ("the tiny olive
sphere"). The grammar never produces a synonym, so no train expression holds one.

Randomness: image i's expressions of a style come from its own generator,
`default_rng([seed, UNC_STREAM or GOOGLE_STREAM, i])`, and the testA/testB cut from
`default_rng([seed, TEST_CUT_STREAM])`. Each sentence takes one uniform draw for its held-out
synonyms whatever its split, so neither the fraction nor the splits move an expression. The other
layouts read none of these streams, so writing the refer layout leaves their bytes as they are.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from refexp.data.synthetic.grammar import (
    Referent,
    ReferentGenerator,
    denotation,
    descriptions_of,
    expressions_for_region,
    normalise_mix,
    realise,
)
from refexp.data.synthetic.scene import Scene
from refexp.data.synthetic.vocabulary import COLOURS, HELDOUT_SYNONYMS, RELATION_WORDS, SHAPES, SIZE_WORDS

STYLES: tuple[str, ...] = ("unc", "google")
# The refer dataset folder and the refs file's split_by of each style.
DATASETS: dict[str, str] = {"unc": "refcoco", "google": "refcocog"}
SPLIT_BY: dict[str, str] = {"unc": "unc", "google": "google"}
SPLITS: dict[str, tuple[str, ...]] = {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val")}
# Second keys of the generators (7, 11, 13, 17 and 19 are generate.py's).
UNC_STREAM = 23
GOOGLE_STREAM = 29
TEST_CUT_STREAM = 31
STREAMS: dict[str, int] = {"unc": UNC_STREAM, "google": GOOGLE_STREAM}
DEFAULTS: dict[str, dict[str, Any]] = {
    "unc": {"expression_mix": {"attribute": 1.0, "position": 1.0, "relation": 0.2},
            "expressions_per_object": 2, "clause": False},
    "google": {"expression_mix": {"attribute": 0.2, "position": 0.6, "relation": 1.0},
               "expressions_per_object": 2, "clause": True},
}
DEFAULT_HELDOUT_SYNONYM_FRACTION = 0.3
# Only G-Ref gives its target and landmark their full description.
FULL_DESCRIPTION: dict[str, bool] = {"unc": False, "google": True}
CLAUSE_CONNECTORS: tuple[str, ...] = ("that is", "which is")
# G-Ref draws this many times expressions_per_object grammar expressions: several minimal
# referents ("the red circle", "the large circle") become one full one ("the large red circle").
OVERSAMPLE = 3


@dataclass(frozen=True)
class StyleParams:
    weights: tuple[float, ...]  # over grammar.KINDS, summing to 1
    expressions_per_object: int
    clause: bool
    full_description: bool


@dataclass(frozen=True)
class ReferParams:
    unc: StyleParams
    google: StyleParams
    heldout_synonym_fraction: float

    def style(self, name: str) -> StyleParams:
        return getattr(self, name)


@dataclass(frozen=True)
class ReferSentence:
    tokens: tuple[str, ...]
    kind: str  # the grammar's kind: attribute | position | relation
    heldout: bool  # some word was replaced by its held-out synonym

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass(frozen=True)
class StyleRefs:
    """One image's refs in one style: its split there, and per scene object (in scene.objects
    order) the object's region index and its sentences (empty: no ref for that object)."""

    split: str
    objects: tuple[tuple[int, tuple[ReferSentence, ...]], ...]


def _plain(section: Any) -> dict:
    if hasattr(section, "model_dump"):  # a config section passed as is
        section = section.model_dump()
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ValueError(f"expected a mapping, got {section!r}")
    return dict(section)


def refer_params(refer: Mapping | Any | None = None) -> ReferParams:
    """ReferParams from the `synthetic.refer` section (a dict or the config section; missing keys
    take DEFAULTS, a style's partial expression_mix that style's default weights; unknown keys
    and out-of-range values are errors naming the key)."""
    refer = _plain(refer)
    unknown = sorted(set(refer) - {*STYLES, "heldout_synonym_fraction"})
    if unknown:
        raise ValueError(f"refer: unknown keys {unknown} (known: {[*STYLES, 'heldout_synonym_fraction']})")
    fraction = refer.get("heldout_synonym_fraction", DEFAULT_HELDOUT_SYNONYM_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"refer.heldout_synonym_fraction must be a number in [0, 1], got {fraction!r}")
    styles = {}
    for style in STYLES:
        given = _plain(refer.get(style))
        unknown = sorted(set(given) - set(DEFAULTS[style]))
        if unknown:
            raise ValueError(f"refer.{style}: unknown keys {unknown} (known: {list(DEFAULTS[style])})")
        values = {**DEFAULTS[style], **given}
        mix = {**DEFAULTS[style]["expression_mix"], **_plain(values["expression_mix"])}
        try:
            weights = normalise_mix(mix)
        except ValueError as e:
            raise ValueError(f"refer.{style}.{e}") from None
        count, clause = values["expressions_per_object"], values["clause"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"refer.{style}.expressions_per_object must be an integer >= 1, got {count!r}")
        if not isinstance(clause, bool):
            raise ValueError(f"refer.{style}.clause must be true or false, got {clause!r}")
        styles[style] = StyleParams(tuple(float(w) for w in weights), count, clause, FULL_DESCRIPTION[style])
    return ReferParams(**styles, heldout_synonym_fraction=float(fraction))


def refer_splits(world_splits: Sequence[str], seed: int) -> dict[str, tuple[str, ...]]:
    """Per style, the split of each image (by index) from the world's train/val/test."""
    test = [i for i, s in enumerate(world_splits) if s == "test"]
    order = np.random.default_rng([seed, TEST_CUT_STREAM]).permutation(len(test))
    unc = list(world_splits)
    for rank, j in enumerate(order):
        unc[test[j]] = "testA" if rank < (len(test) + 1) // 2 else "testB"
    google = ["val" if s == "test" else s for s in world_splits]
    return {"unc": tuple(unc), "google": tuple(google)}


def full_referent(ref: Referent, gen: ReferentGenerator, t: int) -> Referent:
    """`ref` with the target's (region t's) and the landmark's most specific description; it
    still denotes region t alone (asserted)."""
    target = descriptions_of(gen.g.regions[t])[-1]
    landmark = ref.landmark
    if landmark is not None:
        matches = np.flatnonzero(gen.g.matching(landmark))
        if len(matches) != 1:
            raise AssertionError(f"grammar produced a landmark {landmark} that is not unique")
        landmark = descriptions_of(gen.g.regions[int(matches[0])])[-1]
    full = dataclasses.replace(ref, target=target, landmark=landmark)
    if denotation(full, gen.g) != [t]:
        raise AssertionError(f"the full description {full} does not denote region {t} alone")
    return full


def with_clause(text: str, ref: Referent, rng: np.random.Generator) -> str:
    """Realised `text` of `ref` with its zone or relation as a relative clause ("the red circle
    that is on the left"); attribute and superlative referents have none and are returned as is."""
    if ref.zone is None and ref.relation is None:
        return text
    words = text.split()
    head = words.index(ref.target.category) + 1  # realise puts the target's noun phrase first
    connector = CLAUSE_CONNECTORS[int(rng.integers(len(CLAUSE_CONNECTORS)))]
    return " ".join([*words[:head], *connector.split(), *words[head:]])


def object_expressions(gen: ReferentGenerator, t: int, p: StyleParams,
                       rng: np.random.Generator) -> list[tuple[str, str]]:
    """(kind, text) of up to p.expressions_per_object distinct expressions for region t."""
    weights = np.array(p.weights)
    n = p.expressions_per_object
    if not p.full_description:
        return [(e.kind, with_clause(e.text, e.referent, rng) if p.clause else e.text)
                for e in expressions_for_region(gen, t, n, weights, rng)]
    pool = [(e.kind, full_referent(e.referent, gen, t))
            for e in expressions_for_region(gen, t, OVERSAMPLE * n, weights, rng)]
    # distinct full referents first, in draw order; then each again, realised with other synonyms
    ordered = list(dict.fromkeys(pool)) + pool
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for kind, ref in ordered:
        if len(out) == n:
            break
        text = realise(ref, rng)
        if p.clause:
            text = with_clause(text, ref, rng)
        key = text.removeprefix("the ")
        if key not in seen:
            seen.add(key)
            out.append((kind, text))
    return out


def heldout_tokens(tokens: Sequence[str]) -> tuple[str, ...]:
    return tuple(HELDOUT_SYNONYMS.get(w, w) for w in tokens)


def image_refs(scene: Scene, index: int, seed: int, splits: Mapping[str, str],
               params: ReferParams) -> dict[str, StyleRefs]:
    """Image `index`'s refs in every style; `splits` is its split per style (refer_splits)."""
    gen = ReferentGenerator(scene)  # draws nothing: both styles share it
    out = {}
    for style in STYLES:
        rng = np.random.default_rng([seed, STREAMS[style], index])
        p, split = params.style(style), splits[style]
        objects = []
        for obj in scene.objects:
            sentences = []
            for kind, text in object_expressions(gen, obj.index, p, rng):
                tokens = tuple(text.split())
                draw = rng.random()  # drawn for every sentence, whatever its split
                heldout = False
                if split != "train" and draw < params.heldout_synonym_fraction:
                    swapped = heldout_tokens(tokens)
                    heldout, tokens = swapped != tokens, swapped
                sentences.append(ReferSentence(tokens, kind, heldout))
            objects.append((obj.index, tuple(sentences)))
        out[style] = StyleRefs(split, tuple(objects))
    return out


def synonym_competitors(word: str) -> tuple[str, ...]:
    """The grammar words a held-out synonym of `word` must be farther from (in GloVe) than from
    `word`: the other values of its slot (other colours, the other size's words, other shapes,
    the other relations' words)."""
    if word in COLOURS:
        return tuple(c for c in COLOURS if c != word)
    if word in SHAPES:
        return tuple(s for s in SHAPES if s != word)
    for size, words in SIZE_WORDS.items():
        if word in words:
            return tuple(w for other, ws in SIZE_WORDS.items() if other != size for w in ws)
    heads = {rel: tuple(dict.fromkeys(w for phrase in phrases for w in phrase.split() if w not in ("to", "the", "of")))
             for rel, phrases in RELATION_WORDS.items()}
    for rel, words in heads.items():
        if word in words:
            return tuple(dict.fromkeys(w for other, ws in heads.items() if other != rel for w in ws))
    raise KeyError(f"{word!r} is no colour, size, shape or relation word of the grammar")

