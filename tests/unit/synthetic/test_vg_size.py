"""Visual Genome's own size (vg_images, vg_regions_per_image): VG-only scenes beyond the shared world,
and the ReferIt and COCO layouts untouched by either parameter."""
from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path

import pytest

from refexp.data.synthetic import generate, iter_images

generate_module = importlib.import_module("refexp.data.synthetic.generate")  # the module, not the function


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(root)}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _json(path: Path):
    return json.loads(path.read_text())


def test_vg_params_size_the_layout(tmp_path):
    counts = generate(tmp_path, 6, 3, formats=("visual_genome",), vg_images=10, vg_regions_per_image=3,
                      image_width=64, image_height=64)
    root = tmp_path / "visual_genome"
    images, regions = _json(root / "image_data.json"), _json(root / "region_descriptions.json")
    assert [im["image_id"] for im in images] == [r["id"] for r in regions] == list(range(1, 11))
    # the world's images are in COCO too; the VG-only scenes are not (coco_id null, as in real VG)
    assert [im["coco_id"] for im in images] == [1, 2, 3, 4, 5, 6, None, None, None, None]
    assert all(len(r["regions"]) == 3 for r in regions)
    assert sorted(p.name for p in (root / "VG_100K").iterdir()) == sorted(f"{i}.jpg" for i in range(1, 11))
    assert all((im["width"], im["height"]) == (64, 64) for im in images)
    assert counts["vg_images"] == 10 and counts["vg_only_images"] == 4 and counts["vg_regions"] == 30
    # region boxes stay inside their image; graphs only name objects of their own image
    for entry in regions:
        for r in entry["regions"]:
            assert 0 <= r["x"] and r["x"] + r["width"] <= 64 and 0 <= r["y"] and r["y"] + r["height"] <= 64
    for graph in _json(root / "region_graphs.json"):
        for g in graph["regions"]:
            assert all(o["object_id"] // 1000 == graph["image_id"] for o in g["objects"])


def test_fewer_vg_images_than_the_world_keeps_its_first_images(tmp_path):
    generate(tmp_path, 6, 3, formats=("visual_genome",), vg_images=4)
    images = _json(tmp_path / "visual_genome" / "image_data.json")
    assert [im["image_id"] for im in images] == [im["coco_id"] for im in images] == [1, 2, 3, 4]


def test_vg_params_leave_referit_and_coco_byte_identical(tmp_path):
    generate(tmp_path / "a", 6, 3)
    generate(tmp_path / "b", 6, 3, vg_images=9, vg_regions_per_image=2)
    for fmt in ("referit", "coco"):
        assert _tree_hash(tmp_path / "a" / fmt) == _tree_hash(tmp_path / "b" / fmt), fmt
    assert _tree_hash(tmp_path / "a" / "visual_genome") != _tree_hash(tmp_path / "b" / "visual_genome")


def test_vg_only_scenes_run_no_selective_search(tmp_path, monkeypatch):
    calls = []
    real = generate_module.proposals.selective_search

    def counting(image, *args, **kwargs):
        calls.append(image.shape)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(generate_module.proposals, "selective_search", counting)
    generate(tmp_path, 3, 0, formats=("referit", "visual_genome"), vg_images=8, image_width=48, image_height=48)
    assert len(calls) == 3  # the world's three images, none of the five VG-only scenes
    assert len(_json(tmp_path / "visual_genome" / "image_data.json")) == 8


def test_vg_only_scenes_have_their_own_stream(tmp_path):
    # scene j of the VG-only part does not depend on the world's size (only its id does)
    small = [i for i in iter_images(3, 0, vg_images=6) if not i.in_coco]
    large = [i for i in iter_images(5, 0, vg_images=8) if not i.in_coco]
    assert [i.image_id for i in small] == [4, 5, 6] and [i.image_id for i in large] == [6, 7, 8]
    assert [[d.phrase for d in i.region_descriptions] for i in small] == \
        [[d.phrase for d in i.region_descriptions] for i in large]
    assert all((a.scene.image == b.scene.image).all() for a, b in zip(small, large))
    # ... and is not a copy of a world image
    world = list(iter_images(3, 0))
    assert not any((w.scene.image == s.scene.image).all() for w in world for s in small)


def test_worker_processes_write_the_same_vg_only_bytes(tmp_path):
    generate(tmp_path / "one", 2, 0, formats=("visual_genome",), vg_images=7, workers=1)
    generate(tmp_path / "two", 2, 0, formats=("visual_genome",), vg_images=7, workers=2)
    assert _tree_hash(tmp_path / "one") == _tree_hash(tmp_path / "two")


def test_vg_only_descriptions_are_terse_varied_and_recur():
    items = [i for i in iter_images(1, 4, vg_images=301, vg_regions_per_image=8) if not i.in_coco]
    descriptions = [d for i in items for d in i.region_descriptions]
    kinds = {d.kind for d in descriptions}
    assert {"pair", "group", "triple", "object_stuff", "single", "stuff"} <= kinds
    multi = [d for d in descriptions if d.kind in ("pair", "group", "triple", "object_stuff")]
    phrases = [d.phrase for d in multi]
    # counts, sizes, colours and places all occur ...
    assert any(re.match(r"^(two|three) ", p) for p in phrases)
    assert any(re.search(r"\b(small|large)\b", p) for p in phrases)
    assert any(re.search(r" (on|in) (the )?(grass|sand|snow|water|ground|wall|floor|sky)$", p)
               for d, p in zip(multi, phrases) if d.kind == "pair")
    # ... most phrases carry no article (VG's style) ...
    assert sum(not re.search(r"\b(the|a|an)\b", p) for p in phrases) > 0.7 * len(phrases)
    # ... coarse ones recur word for word in other images (the sets), fine ones mostly do not (the corpus)
    images_of: dict[str, set[int]] = {}
    for item in items:
        for d in item.region_descriptions:
            images_of.setdefault(d.phrase, set()).add(item.image_id)
    recurring = sum(len(images_of[p]) > 1 for p in phrases)
    assert 0.3 * len(phrases) < recurring < 0.9 * len(phrases)
    # every multi-object description has a region graph with a relationship (the several-objects filter)
    for d in multi:
        if d.kind != "triple" or " near " in d.phrase:
            assert len(d.graph_objects) >= 2 and d.relationships, d


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_vg_images_is_named(tmp_path, bad):
    with pytest.raises(ValueError, match="vg_images"):
        generate(tmp_path, 2, 0, vg_images=bad)
