"""Expressions: each denotes exactly its target when read back by an independent parser."""
from __future__ import annotations

from collections import Counter

import pytest

from refexp.data.synthetic import generate, iter_images

from .reference_parser import Facts, parse, referents


def _facts(scene) -> list[Facts]:
    return [Facts(r.category, r.colour, r.size, r.kind == "stuff", r.mask) for r in scene.regions]


def test_every_expression_denotes_exactly_its_target_when_parsed_back(default_images):
    checked = 0
    for item in default_images:
        facts = _facts(item.scene)
        for region, exprs in zip(item.scene.regions, item.expressions):
            for e in exprs:
                parsed = parse(e.text)
                assert referents(parsed, facts, item.scene.width, item.scene.height) == [region.index], (
                    f"image {item.image_id}: {e.text!r} does not pick out only region {region.index}")
                assert parsed.kind == e.kind, f"{e.text!r} recorded as {e.kind}, reads as {parsed.kind}"
                checked += 1
    assert checked > 2000


def test_every_region_gets_distinct_expressions(default_images):
    per_region = [exprs for item in default_images for exprs in item.expressions]
    assert all(per_region), "a region without any expression"
    full = sum(len(e) == 3 for e in per_region)
    assert full / len(per_region) > 0.97
    for exprs in per_region:
        texts = [e.text.removeprefix("the ") for e in exprs]
        assert len(set(texts)) == len(texts)


def test_default_world_mixes_all_kinds(default_images):
    kinds = Counter(e.kind for item in default_images for exprs in item.expressions for e in exprs)
    total = sum(kinds.values())
    for kind in ("attribute", "position", "relation"):
        assert kinds[kind] / total > 0.15, kinds


def _twins(scene) -> int:
    keys = Counter((o.category, o.colour) for o in scene.objects)
    return sum(1 for o in scene.objects if keys[(o.category, o.colour)] > 1)


def test_at_least_a_third_of_object_targets_have_a_twin_by_default(default_images):
    objects = sum(len(item.scene.objects) for item in default_images)
    twins = sum(_twins(item.scene) for item in default_images)
    assert twins / objects >= 1 / 3, f"{twins}/{objects}"


def test_twins_are_told_apart_only_by_position_or_relation(default_images):
    seen = 0
    for item in default_images:
        keys = Counter((o.category, o.colour) for o in item.scene.objects)
        for o in item.scene.objects:
            if keys[(o.category, o.colour)] > 1:
                kinds = {e.kind for e in item.expressions[o.index]}
                assert kinds and "attribute" not in kinds
                seen += 1
    assert seen > 50


def test_twin_fraction_zero_gives_no_twins_and_attribute_mix_only_attribute():
    images = list(iter_images(30, 1, twin_fraction=0.0, expression_mix={"attribute": 1, "position": 0, "relation": 0}))
    assert sum(_twins(item.scene) for item in images) == 0
    kinds = Counter(e.kind for item in images for exprs in item.expressions for e in exprs)
    assert set(kinds) == {"attribute"}


def test_relation_mix_yields_mostly_relations():
    images = list(iter_images(30, 1, expression_mix={"attribute": 0, "position": 0, "relation": 1}))
    kinds = Counter(e.kind for item in images for exprs in item.expressions for e in exprs)
    assert kinds["relation"] / sum(kinds.values()) > 0.85, kinds


def test_unknown_expression_kind_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="colour"):
        generate(tmp_path, 2, 0, expression_mix={"colour": 1.0})


@pytest.mark.parametrize("bad", [{"min_objects": 4, "max_objects": 3}, {"image_width": 8},
                                 {"expressions_per_target": 0}, {"val_fraction": 0.5, "test_fraction": 0.5},
                                 {"formats": ("pascal",)}])
def test_bad_parameters_are_named_in_the_error(tmp_path, bad):
    name = next(iter(bad)) if "formats" not in bad else "formats"
    with pytest.raises(ValueError, match=name.split("_")[0]):
        generate(tmp_path, 2, 0, **bad)
