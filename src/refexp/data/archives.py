"""Safe extraction of downloaded zip / tar(.gz) archives.

Every member is checked before anything is written: absolute paths, `..`
components, drive letters, symlinks or hardlinks that resolve outside the
target, device files / FIFOs, a file listed twice and a member under a path that
is a file or symlink are refused with `UnsafeArchiveError` naming the archive and
the member, and one that unpacks to more than the free disk is an ArchiveError.
A clean archive is extracted into a temporary
sibling of the target and renamed into place, so a failed or killed extraction
never leaves a half-filled directory that looks finished.
"""
from __future__ import annotations

import logging
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)


class UnsafeArchiveError(ValueError):
    """An archive member that would land outside the target, or is not a plain file/dir/link."""


class ArchiveError(ValueError):
    """A file that is not a readable zip or tar archive."""


def _normalized(name: str) -> str:
    # Zips written on Windows may use backslashes; treat them as separators for the checks.
    return name.replace("\\", "/")


def _escapes(path: str) -> bool:
    """True when a relative archive path, normalised, leaves the extraction root."""
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return True
    normal = posixpath.normpath(path)
    return normal == ".." or normal.startswith("../")


def check_member_name(archive: Path, name: str) -> str:
    """The member's normalised relative path; raise UnsafeArchiveError if it would escape."""
    path = _normalized(name)
    if not path or path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in path.split("/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'; refusing to extract")
    return posixpath.normpath(path)


def _check_link(archive: Path, name: str, target: str, hard: bool) -> None:
    target = _normalized(target)
    # A symlink resolves relative to its own directory, a tar hardlink relative to the archive root.
    joined = target if hard else posixpath.join(posixpath.dirname(_normalized(name)), target)
    if target.startswith("/") or _escapes(joined):
        kind = "hardlink" if hard else "symlink"
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} is a {kind} pointing outside the target ({target!r}); refusing to extract"
        )


def _check_layout(archive: Path, names: list[str], dirs: set[str]) -> None:
    """A file listed twice (the last copy would silently win) or used as a directory too is refused."""
    files: set[str] = set()
    for name in names:
        if name in files and name not in dirs:
            raise UnsafeArchiveError(f"{archive}: member {name!r} is listed twice; refusing to extract")
        files.add(name)
    for name in names:
        parent = posixpath.dirname(name)
        while parent:
            if parent in files and parent not in dirs:
                raise UnsafeArchiveError(f"{archive}: member {name!r} lies under {parent!r}, which is not a directory; "
                                         "refusing to extract")
            parent = posixpath.dirname(parent)


def _tar_is_readable(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (EOFError, OSError, tarfile.TarError):  # a truncated .tar.gz fails inside gzip
        return True  # looks like one: list_members reports why it cannot be read


def _check_tar(archive: Path, tf: tarfile.TarFile) -> list[str]:
    names, dirs = [], set()
    for member in tf.getmembers():
        names.append(check_member_name(archive, member.name))
        if member.isdir():
            dirs.add(names[-1])
        if member.issym() or member.islnk():
            _check_link(archive, member.name, member.linkname, hard=member.islnk())
        elif member.isdev() or not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"{archive}: member {member.name!r} is a device file or FIFO; refusing to extract"
            )
    _check_layout(archive, names, dirs)
    return names


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> list[str]:
    names, dirs = [], set()
    for info in zf.infolist():
        names.append(check_member_name(archive, info.filename))
        if info.is_dir():
            dirs.add(names[-1])
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
        elif mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a device file or FIFO; refusing to extract")
    _check_layout(archive, names, dirs)
    return names


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or _tar_is_readable(path)


def list_members(archive: str | Path) -> list[str]:
    """Validated, normalised member paths; raises UnsafeArchiveError / ArchiveError."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return _check_zip(archive, zf)
    if _tar_is_readable(archive):
        try:
            with tarfile.open(archive, "r:*") as tf:
                return _check_tar(archive, tf)
        except (tarfile.TarError, EOFError, OSError) as err:  # EOFError/OSError: a cut or corrupt .gz
            raise ArchiveError(f"{archive}: unreadable tar archive: {err}") from None
    raise ArchiveError(f"{archive}: not a zip or tar archive")


def _declared_bytes(archive: Path) -> int:
    """The members' unpacked sizes as the archive states them (zipfile stops at, and CRC-checks, that size)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return sum(info.file_size for info in zf.infolist())
    with tarfile.open(archive, "r:*") as tf:
        return sum(member.size for member in tf.getmembers() if member.isfile())


def _check_room(archive: Path, dest: Path) -> None:
    """A zip bomb (or an archive larger than the disk) is refused before it fills the disk."""
    where = dest.parent
    while not where.exists():
        where = where.parent
    needed, free = _declared_bytes(archive), shutil.disk_usage(where).free
    if needed > free:
        raise ArchiveError(f"{archive}: members unpack to {needed} bytes but only {free} are free in {where}; "
                           "refusing to extract")


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Check every member, extract into a temporary sibling of `dest`, then rename it to `dest`.

    `dest` must not exist yet (the caller owns the layout it extracts into).
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"extraction target already exists: {dest}")
    list_members(archive)  # raises before anything is written
    _check_room(archive, dest)
    tmp = dest.with_name(f".{dest.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        else:
            with tarfile.open(archive, "r:*") as tf:
                # The stdlib 'data' filter repeats our checks and drops unsafe modes (belt and braces).
                tf.extractall(tmp, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(f"{archive}: extraction failed: {err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dest)
    log.info("extracted %s into %s", archive.name, dest)
    return dest
