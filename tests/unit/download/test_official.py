"""Source `official` end to end against the fault server: the raw layout equals the `local` import.

The manifest used is the real one with only its URLs pointed at 127.0.0.1. The
text_objseg files are served byte-for-byte from ../shared/data/referit, so the
real manifest's sizes and sha256 are checked too; the two Berkeley archives are
small fixtures laid out like the released ones (images/ + mask/ in
referitdata.tar.gz, referit_edgeboxes_top100/ in the zip).
"""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest
import yaml

from refexp.config import parse_config
from refexp.data import download as dl
from refexp.data.archives import UnsafeArchiveError
from refexp.data.download import DiskFullError, MirrorsExhausted
from refexp.data.fetch import fetch
from refexp.data.official import ManifestError
from tests.conftest import REPO_ROOT, require_shared

REAL_MANIFEST = REPO_ROOT / "src" / "refexp" / "data" / "manifest.yaml"
IMAGES = {"38100.jpg": b"\xff\xd8jpeg-38100", "40429.jpg": b"\xff\xd8jpeg-40429"}
MASKS = {"38100_1.mat": b"MATLAB 5.0 38100_1", "40429_2.mat": b"MATLAB 5.0 40429_2"}
PROPOSALS = {"38100.txt": b"0 0 10 10\n", "40429.txt": b"1 2 30 40\n"}


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def referit_archives() -> dict[str, bytes]:
    return {
        "referitdata.tar.gz": tar_gz(
            {**{f"./images/{k}": v for k, v in IMAGES.items()}, **{f"./mask/{k}": v for k, v in MASKS.items()}}
        ),
        "referit_edgeboxes_top100.zip": zip_bytes({f"referit_edgeboxes_top100/{k}": v for k, v in PROPOSALS.items()}),
    }


def shared_text_files() -> dict[str, Path]:
    """The text_objseg raw files, by artifact name, from ../shared/data/referit."""
    root = require_shared("referit")
    return {p.name: p for sub in ("annotations", "splits", "vocab") for p in (root / sub).iterdir()}


@pytest.fixture
def world(server, tmp_path, monkeypatch):
    """Serve the ReferIt artifacts; write a manifest pointing at the server; chdir to a tmp repo."""
    manifest = yaml.safe_load(REAL_MANIFEST.read_text())
    texts = shared_text_files()
    archives = referit_archives()
    for placement in manifest["datasets"]["referit"]:
        name = placement["artifact"]
        entry = manifest["artifacts"][name]
        # The first mirror is dead for every file: the second one must be used.
        entry["urls"] = [server.url(f"/dead/{name}"), server.url(f"/mirror/{name}")]
        server.files[f"/mirror/{name}"] = archives[name] if name in archives else texts[name].read_bytes()
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    return {"manifest": manifest, "manifest_path": path, "texts": texts, "archives": archives, "repo": repo}


def repo_params() -> dict:
    """The repo's params.yaml, so every other section keeps validating as the project grows."""
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def config(world, local_root: Path | None = None, **fetch_overrides):
    raw = repo_params()
    raw["datasets"]["referit"] = {"format": "referit", "source": "official"}
    if local_root is not None:
        raw["datasets"]["referit_local"] = {"format": "referit", "source": "local", "root": str(local_root)}
    raw["fetch_data"] = {
        **raw.get("fetch_data", {}),
        "manifest": str(world["manifest_path"]),
        "hash_lock": str(world["repo"] / "data_manifest.lock.yaml"),
        "retries": 2,
        "backoff_seconds": 0.0,
        "min_free_gb": 0.0,
        **fetch_overrides,
    }
    return parse_config(raw)


def local_copy_like_a_user_would_unpack(world, root: Path) -> Path:
    """The same release, unpacked by hand into the layout the `local` source imports."""
    for sub, files in (("images", IMAGES), ("mask", MASKS), ("proposals", PROPOSALS)):
        (root / sub).mkdir(parents=True)
        for name, data in files.items():
            (root / sub / name).write_bytes(data)
    for name, src in world["texts"].items():
        sub = "annotations" if name.endswith(".json") else "vocab" if name.startswith("vocabulary") else "splits"
        if name == "vocabulary_scrc.txt":
            continue  # SCRC's copy of the vocabulary is not a text_objseg artifact
        (root / sub).mkdir(exist_ok=True)
        shutil.copyfile(src, root / sub / name)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.shared
def test_official_fetch_gives_the_same_raw_layout_as_the_local_source(server, world, tmp_path):
    server.faults["/mirror/referitdata.tar.gz"] = ["drop", "500"]
    local_root = local_copy_like_a_user_would_unpack(world, tmp_path / "unpacked")
    cfg = config(world, local_root)
    raw = world["repo"] / "data" / "raw"

    metrics = fetch(cfg, "referit", raw / "referit")
    fetch(cfg, "referit_local", raw / "referit_local")

    official, local = snapshot(raw / "referit"), snapshot(raw / "referit_local")
    assert official == local
    assert {"annotations", "splits", "vocab", "images", "mask", "proposals"} <= set(official)
    assert metrics["official/artifacts"] == 16
    assert metrics["official/files"] == sum(1 for v in official.values() if v != "<dir>")
    # The drop was resumed with a Range request, after the dead mirror's 404.
    assert server.hits("/mirror/referitdata.tar.gz")[2].startswith("bytes=")
    # No temporary or scratch directory is left next to the layout.
    assert sorted(p.name for p in raw.iterdir()) == ["referit", "referit_local"]
    # The archives had no hash in the manifest: their first-seen hashes are now locked.
    locked = yaml.safe_load((world["repo"] / "data_manifest.lock.yaml").read_text())["artifacts"]
    assert set(locked) == {"referitdata.tar.gz", "referit_edgeboxes_top100.zip"}
    assert locked["referitdata.tar.gz"]["sha256"] == hashlib.sha256(world["archives"]["referitdata.tar.gz"]).hexdigest()

    # A second fetch re-lays the layout from the verified downloads, without the network.
    n_requests = len(server.requests)
    fetch(cfg, "referit", raw / "referit")
    assert len(server.requests) == n_requests
    assert snapshot(raw / "referit") == official


@pytest.mark.shared
def test_annotations_subset_skips_the_image_archive(server, world):
    cfg = config(world, subset="annotations")
    out = world["repo"] / "data" / "raw" / "referit"

    metrics = fetch(cfg, "referit", out)

    assert server.hits("/mirror/referitdata.tar.gz") == []
    assert metrics["official/artifacts"] == 15
    assert {p.name for p in out.iterdir()} == {"annotations", "splits", "vocab", "proposals"}


@pytest.mark.shared
def test_wrong_checksum_is_a_clear_error_and_nothing_is_extracted(server, world):
    world["manifest"]["artifacts"]["referitdata.tar.gz"]["sha256"] = "ab" * 32
    world["manifest_path"].write_text(yaml.safe_dump(world["manifest"], sort_keys=False))
    cfg = config(world)
    raw = world["repo"] / "data" / "raw"

    with pytest.raises(MirrorsExhausted) as err:
        fetch(cfg, "referit", raw / "referit")

    msg = str(err.value)
    assert "could not download referitdata.tar.gz" in msg
    assert server.url("/dead/referitdata.tar.gz") + ": HTTP 404" in msg
    assert server.url("/mirror/referitdata.tar.gz") + ": sha256 mismatch" in msg and "ab" * 32 in msg
    assert not raw.exists()  # nothing laid out, nothing extracted
    assert not (world["repo"] / "data" / "downloads" / "referitdata.tar.gz").exists()


@pytest.mark.shared
def test_path_traversal_member_is_refused_and_nothing_lands_outside(server, world, tmp_path):
    server.files["/mirror/referitdata.tar.gz"] = tar_gz({"images/38100.jpg": b"x", "images/../../../../evil.txt": b"pwned"})
    cfg = config(world)
    raw = world["repo"] / "data" / "raw"

    with pytest.raises(UnsafeArchiveError, match=r"referitdata\.tar\.gz: member 'images/\.\./\.\./\.\./\.\./evil\.txt' contains '\.\.'"):
        fetch(cfg, "referit", raw / "referit")

    assert not list(tmp_path.rglob("evil.txt"))
    assert not (raw / "referit").exists()
    assert sorted(p.name for p in raw.iterdir()) == []  # staging and scratch removed


@pytest.mark.shared
def test_full_disk_is_a_clear_error_before_any_request(server, world, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 10**6, 10**6))
    cfg = config(world, min_free_gb=1.0)

    with pytest.raises(DiskFullError, match=r"not enough free disk .* for referit \(16 artifacts\).*margin of 1\.0 GiB"):
        fetch(cfg, "referit", world["repo"] / "data" / "raw" / "referit")

    assert server.requests == []


def test_dataset_missing_from_the_manifest_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = repo_params()
    raw["datasets"]["glove_840b"] = {"format": "glove", "source": "official"}
    raw["fetch_data"] = {**raw.get("fetch_data", {}), "manifest": str(REAL_MANIFEST)}
    cfg = parse_config(raw)
    with pytest.raises(ManifestError, match=r"datasets\.glove_840b: source 'official' but the manifest has no entry 'glove_840b' or 'glove'"):
        fetch(cfg, "glove_840b", tmp_path / "raw" / "glove_840b")


def test_real_manifest_names_every_official_artifact():
    manifest = yaml.safe_load(REAL_MANIFEST.read_text())
    arts = manifest["artifacts"]
    for name in [
        "referitdata.tar.gz", "referit_edgeboxes_top100.zip", "refclef.zip", "refcoco.zip", "refcoco+.zip",
        "refcocog.zip", "saiapr_tc-12.zip", "train2014.zip", "val2014.zip", "annotations_trainval2014.zip",
        "region_descriptions.json.zip", "image_data.json.zip", "images.zip", "images2.zip", "region_graphs.json.zip",
    ]:
        assert name in arts, name
    assert set(manifest["datasets"]) == {"referit", "refclef", "refcoco", "refcoco+", "refcocog", "coco", "visual_genome"}
    # Every refer zip has a web-archive mirror; no hash is made up (null or 64 hex digits).
    for name in ("refclef.zip", "refcoco.zip", "refcoco+.zip", "refcocog.zip"):
        assert any("web.archive.org" in u for u in arts[name]["urls"])
    for entry in arts.values():
        assert entry["sha256"] is None or len(entry["sha256"]) == 64


def serve_dataset(server, manifest: dict, dataset: str, files: dict[str, bytes]) -> None:
    for placement in manifest["datasets"][dataset]:
        name = placement["artifact"]
        manifest["artifacts"][name]["urls"] = [server.url(f"/m/{name}")]
        manifest["artifacts"][name]["size"] = None  # fixtures, not the real archives
        if name in files:  # optional artifacts (region_graphs) are not fetched unless asked for
            server.files[f"/m/{name}"] = files[name]


@pytest.mark.parametrize(
    "dataset, files, expected",
    [
        (
            "refcoco",
            {
                "refcoco.zip": zip_bytes({"refcoco/instances.json": b"{}", "refcoco/refs(unc).p": b"p1", "refcoco/refs(google).p": b"p2"}),
                "train2014.zip": zip_bytes({"train2014/COCO_train2014_000000000009.jpg": b"jpg"}),
            },
            {"instances.json", "refs(unc).p", "refs(google).p", "images/mscoco/images/train2014/COCO_train2014_000000000009.jpg"},
        ),
        (
            "refclef",
            {
                "refclef.zip": zip_bytes({"refclef/instances.json": b"{}", "refclef/refs(berkeley).p": b"p"}),
                "saiapr_tc-12.zip": zip_bytes({"saiapr_tc-12/00/images/25.jpg": b"jpg"}),
            },
            {"instances.json", "refs(berkeley).p", "images/saiapr_tc-12/00/images/25.jpg"},
        ),
        (
            "visual_genome",
            {
                "region_descriptions.json.zip": zip_bytes({"region_descriptions.json": b"[]"}),
                "image_data.json.zip": zip_bytes({"image_data.json": b"[]"}),
                "images.zip": zip_bytes({"VG_100K/1.jpg": b"jpg"}),
                "images2.zip": zip_bytes({"VG_100K_2/2.jpg": b"jpg"}),
            },
            {"region_descriptions.json", "image_data.json", "VG_100K/1.jpg", "VG_100K_2/2.jpg"},
        ),
    ],
)
def test_refer_and_visual_genome_layouts(server, tmp_path, monkeypatch, dataset, files, expected):
    manifest = yaml.safe_load(REAL_MANIFEST.read_text())
    serve_dataset(server, manifest, dataset, files)
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    monkeypatch.chdir(tmp_path)
    raw = repo_params()
    fmt = "visual_genome" if dataset == "visual_genome" else "refer"
    raw["datasets"][dataset] = {"format": fmt, "source": "official"}
    if fmt == "refer":
        raw["datasets"][dataset]["split_by"] = "google" if dataset == "refcocog" else "unc"
    raw["fetch_data"] = {**raw.get("fetch_data", {}), "manifest": "manifest.yaml", "min_free_gb": 0.0, "retries": 0}
    out = tmp_path / "data" / "raw" / dataset

    fetch(parse_config(raw), dataset, out)

    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected


def test_archive_without_the_expected_member_names_it(server, tmp_path, monkeypatch):
    manifest = yaml.safe_load(REAL_MANIFEST.read_text())
    serve_dataset(server, manifest, "refcocog", {
        "refcocog.zip": zip_bytes({"refcocog_v2/instances.json": b"{}"}),
        "train2014.zip": zip_bytes({"train2014/a.jpg": b"jpg"}),
    })
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    monkeypatch.chdir(tmp_path)
    raw = repo_params()
    raw["datasets"]["refcocog"] = {"format": "refer", "source": "official", "split_by": "google"}
    raw["fetch_data"] = {**raw.get("fetch_data", {}), "manifest": "manifest.yaml", "min_free_gb": 0.0, "subset": "annotations"}

    with pytest.raises(ManifestError, match=r"refcocog\.zip: has no member 'refcocog' .*\['refcocog_v2'\]"):
        fetch(parse_config(raw), "refcocog", tmp_path / "data" / "raw" / "refcocog")
    assert not (tmp_path / "data" / "raw" / "refcocog").exists()
    assert server.hits("/m/train2014.zip") == []  # the annotations subset skips COCO images
