"""The draws of the first region-description code (until Nov 2026), replayed and discarded.

Region descriptions now come from their own generator (see language.py). The first
version drew them from the image's main generator, between the captions and the
box proposals, so the proposals of every world written since depend on how many
numbers it drew. `replay_legacy_description_draws` repeats exactly those draws on
the main generator, so the ReferIt and COCO files stay byte-identical to worlds
written before the change (tests/unit/synthetic/test_determinism.py pins their
hashes). Only the random draws matter here: nothing it computes is written.
"""
from __future__ import annotations

import numpy as np

from refexp.data.synthetic.grammar import Geometry
from refexp.data.synthetic.scene import Region, Scene
from refexp.data.synthetic.vocabulary import STUFF_PREPOSITIONS

_STUFF_PHRASE_CHOICES = 4  # every stuff category had four phrasings
_NEAR_WORDS = 3
_DIRECTION_CHOICES = 2
_KIND_WEIGHTS = {"pair": 0.4, "triple": 0.1, "object_stuff": 0.2, "single": 0.15, "stuff": 0.15}


def _pick(n: int, rng: np.random.Generator) -> int:
    return int(rng.integers(n))


def replay_legacy_description_draws(scene: Scene, count: int, rng: np.random.Generator,
                                    geometry: Geometry | None = None) -> None:
    """Advance `rng` exactly as the first `region_descriptions(scene, count, rng)` did."""
    g = geometry if geometry is not None else Geometry(scene)
    objects, stuff = scene.objects, scene.stuff
    kinds = [k for k in _KIND_WEIGHTS if k not in ("pair",) or len(objects) >= 2]
    kinds = [k for k in kinds if k != "triple" or len(objects) >= 3]
    kinds = [k for k in kinds if k not in ("single", "object_stuff") or objects]
    w = np.array([_KIND_WEIGHTS[k] for k in kinds])
    w = w / w.sum()
    for _ in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=w))]
        _replay_one(kind, scene, g, objects, stuff, rng)


def _replay_one(kind: str, scene: Scene, g: Geometry, objects: list[Region], stuff: list[Region],
                rng: np.random.Generator) -> None:
    if kind == "stuff":
        _pick(len(stuff), rng)
        _pick(_STUFF_PHRASE_CHOICES, rng)
        return
    if kind == "single":
        _pick(len(objects), rng)
        rng.random()  # with size?
        _pick(3, rng)  # determiner (drawn before the choice between the two phrasings)
        _pick(2, rng)
        return
    if kind == "object_stuff":
        o = objects[_pick(len(objects), rng)]
        inside = [s for s in stuff if g.relation_scores["in"][o.index, s.index] > 0]
        s = inside[0] if inside and rng.random() < 0.6 else stuff[_pick(len(stuff), rng)]
        if g.relation_scores["in"][o.index, s.index] > 0:
            _pick(len(STUFF_PREPOSITIONS[s.category]), rng)
        else:
            _pick(_DIRECTION_CHOICES, rng)
        _pick(3, rng)  # determiner
        return
    picks = rng.permutation(len(objects))[: 2 if kind == "pair" else 3]
    chosen = [objects[i] for i in picks]
    if kind == "pair":
        a, b = chosen
        dist = np.hypot(g.cx[a.index] - g.cx[b.index], g.cy[a.index] - g.cy[b.index])
        if dist < 0.35 * min(scene.width, scene.height) and rng.random() < 0.5:
            _pick(_NEAR_WORDS, rng)
        else:
            _pick(_DIRECTION_CHOICES, rng)
        _pick(2, rng)  # second determiner
        _pick(3, rng)  # first determiner
    else:
        for _ in chosen:
            _pick(2, rng)
        _pick(3, rng)  # template
