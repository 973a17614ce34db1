"""refexp.data.archives: unsafe members are refused before anything is written."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from refexp.data.archives import ArchiveError, UnsafeArchiveError, extract, list_members


def make_tar(path: Path, members: list[tuple[str, bytes | None, dict]]) -> Path:
    """members: (name, data or None for non-files, TarInfo attribute overrides)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data, attrs in members:
            info = tarfile.TarInfo(name)
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_safe_tar_extracts_into_place(tmp_path):
    archive = make_tar(
        tmp_path / "ok.tar.gz",
        [("./images/1.jpg", b"jpg", {}), ("mask/1_1.mat", b"mat", {}), ("images/link.jpg", None, {"type": tarfile.SYMTYPE, "linkname": "1.jpg"})],
    )
    out = extract(archive, tmp_path / "out")
    assert (out / "images" / "1.jpg").read_bytes() == b"jpg"
    assert (out / "mask" / "1_1.mat").read_bytes() == b"mat"
    assert (out / "images" / "link.jpg").read_bytes() == b"jpg"  # a link that stays inside is fine
    assert not list(tmp_path.glob(".out.extracting"))


@pytest.mark.parametrize(
    "member, match",
    [
        (("../evil.txt", b"x", {}), r"'\.\./evil\.txt' contains '\.\.'"),
        (("images/../../evil.txt", b"x", {}), r"contains '\.\.'"),
        (("/tmp/evil.txt", b"x", {}), "absolute path"),
        (("images/escape", None, {"type": tarfile.SYMTYPE, "linkname": "../../evil.txt"}), "symlink pointing outside"),
        (("images/abs", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}), "symlink pointing outside"),
        (("images/hard", None, {"type": tarfile.LNKTYPE, "linkname": "../evil.txt"}), "hardlink pointing outside"),
        (("dev/null", None, {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}), "device file"),
        (("fifo", None, {"type": tarfile.FIFOTYPE}), "device file or FIFO"),
    ],
)
def test_unsafe_tar_member_is_refused_and_nothing_is_written(tmp_path, member, match):
    work = tmp_path / "work"
    work.mkdir()
    archive = make_tar(tmp_path / "bad.tar.gz", [("images/1.jpg", b"jpg", {}), member])
    before = tree(tmp_path)

    with pytest.raises(UnsafeArchiveError, match=match) as err:
        extract(archive, work / "out")

    assert "bad.tar.gz" in str(err.value)
    assert tree(tmp_path) == before  # nothing extracted, nothing outside, no temp dir left
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    "members, links, match",
    [
        ({"../evil.txt": b"x"}, None, r"contains '\.\.'"),
        ({"..\\evil.txt": b"x"}, None, r"contains '\.\.'"),
        ({"/evil.txt": b"x"}, None, "absolute path"),
        ({"C:/evil.txt": b"x"}, None, "absolute path"),
        ({"a.txt": b"x"}, {"out": "../../evil.txt"}, "symlink pointing outside"),
    ],
)
def test_unsafe_zip_member_is_refused_and_nothing_is_written(tmp_path, members, links, match):
    archive = make_zip(tmp_path / "bad.zip", members, links)
    before = tree(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=match):
        extract(archive, tmp_path / "sub" / "out")
    assert tree(tmp_path) == before


def test_zip_extracts_and_lists_normalised_names(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"refcoco/instances.json": b"{}", "refcoco/refs(unc).p": b"p"})
    assert list_members(archive) == ["refcoco/instances.json", "refcoco/refs(unc).p"]
    out = extract(archive, tmp_path / "out")
    assert tree(out) == {"refcoco", "refcoco/instances.json", "refcoco/refs(unc).p"}


def test_not_an_archive_is_a_clear_error(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"<html>503 Service Unavailable</html>")
    with pytest.raises(ArchiveError, match=r"x\.zip: not a zip or tar archive"):
        extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_target_is_not_overwritten(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"a.txt": b"x"})
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        extract(archive, tmp_path / "out")
