"""Same seed -> byte-identical files; another seed -> another world."""
from __future__ import annotations

from pathlib import Path

from refexp.data.synthetic import generate

from .conftest import TINY_IMAGES, TINY_SEED


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tiny_world, tmp_path):
    counts = generate(tmp_path, TINY_IMAGES, TINY_SEED)
    first, second = _files(tiny_world.root), _files(tmp_path)
    assert counts == tiny_world.counts
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, f"files differ between two runs with one seed: {differing[:5]}"
    # every kind of file is covered
    suffixes = {Path(n).suffix for n in first}
    assert {".jpg", ".mat", ".json", ".txt"} <= suffixes


def test_a_format_written_alone_is_identical_to_the_same_format_written_with_others(tiny_world, tmp_path):
    generate(tmp_path, TINY_IMAGES, TINY_SEED, formats=("visual_genome",))
    assert [p.name for p in tmp_path.iterdir()] == ["visual_genome"]
    assert _files(tmp_path / "visual_genome") == _files(tiny_world.root / "visual_genome")


def test_another_seed_gives_another_world(tiny_world, tmp_path):
    generate(tmp_path, TINY_IMAGES, TINY_SEED + 1, formats=("referit",))
    first, second = _files(tiny_world.root / "referit"), _files(tmp_path / "referit")
    images = [n for n in first if n.endswith(".jpg")]
    assert all(first[n] != second.get(n) for n in images)
    assert first["annotations/referit_query_all.json"] != second["annotations/referit_query_all.json"]


def test_regenerating_replaces_the_previous_output(tmp_path):
    generate(tmp_path, 3, 0, formats=("referit",))
    generate(tmp_path, 2, 0, formats=("referit",))
    assert sorted(p.name for p in (tmp_path / "referit" / "images").iterdir()) == ["1.jpg", "2.jpg"]
    assert not list(tmp_path.glob(".*partial"))


def test_another_process_with_another_hash_seed_writes_the_same_bytes(tiny_world, tmp_path):
    # guards against set/dict-hash order and clock dependence across runs
    import os
    import subprocess
    import sys

    code = f"from refexp.data.synthetic import generate; generate({str(tmp_path)!r}, {TINY_IMAGES}, {TINY_SEED})"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert _files(tmp_path) == _files(tiny_world.root)


def test_worker_processes_write_the_same_bytes(tiny_world, tmp_path):
    counts = generate(tmp_path, TINY_IMAGES, TINY_SEED, workers=2)
    assert counts == tiny_world.counts
    assert _files(tmp_path) == _files(tiny_world.root)


def test_region_descriptions_draw_from_their_own_stream(tiny_world, tmp_path, monkeypatch):
    # The VG descriptions have their own generator: descriptions that draw any amount of
    # randomness leave the ReferIt and COCO files (proposals included) byte-identical.
    import importlib

    generate_module = importlib.import_module("refexp.data.synthetic.generate")  # the module, not the function

    describe = generate_module.region_descriptions

    def greedy(scene, count, rng, *args):
        rng.random(1000)
        return describe(scene, count, rng, *args)[::-1]

    monkeypatch.setattr(generate_module, "region_descriptions", greedy)
    generate(tmp_path, TINY_IMAGES, TINY_SEED, formats=("referit", "coco"))
    for fmt in ("referit", "coco"):
        assert _files(tmp_path / fmt) == _files(tiny_world.root / fmt)
