"""HTTP downloads that survive bad networks, and say clearly what failed.

One artifact = one file with URLs in order of preference, an expected size and a
sha256 (either may be unknown). `download` tries each mirror in turn:

- a partial file (`<name>.part`) is resumed with an HTTP Range request;
- transient failures (connection drops, timeouts, 408/429/5xx) are retried with
  exponential backoff; permanent ones (404, 403, 410, ...) move on to the next mirror;
- before writing, the free disk is checked against the bytes still to come;
- the finished file is verified (size, then sha256) before it gets its final name,
  so nothing downstream ever sees an unverified file;
- a hash the manifest does not know is recorded the first time in a `HashLock`
  file, and every later download is verified against it;
- when every mirror fails, `MirrorsExhausted` lists each URL and why it failed.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import requests
import yaml
from tqdm import tqdm

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# A mirror that answers one of these will not get better by asking again.
PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class DownloadError(RuntimeError):
    """A download that cannot complete; the message says which artifact and why."""


class MirrorsExhausted(DownloadError):
    """Every URL of an artifact failed; `failures` holds (url, reason) for each."""

    def __init__(self, artifact: str, failures: list[tuple[str, str]]):
        self.artifact = artifact
        self.failures = failures
        lines = "\n".join(f"  - {url}: {reason}" for url, reason in failures)
        super().__init__(f"could not download {artifact}: all {len(failures)} URL(s) failed:\n{lines}")


class DiskFullError(DownloadError):
    """Not enough free disk for a download (checked up front, or ENOSPC while writing)."""


@dataclass(frozen=True)
class Artifact:
    name: str  # file name, and the artifact's key in the manifest and the lock file
    urls: tuple[str, ...]
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    # Attempts per mirror = 1 + retries; the wait before retry k is backoff * factor**k, capped.
    retries: int = 5
    backoff_seconds: float = 2.0
    backoff_factor: float = 2.0
    max_backoff_seconds: float = 120.0
    timeout_seconds: float = 60.0

    def delay(self, retry: int) -> float:
        return min(self.max_backoff_seconds, self.backoff_seconds * self.backoff_factor**retry)


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    url: str | None  # None when the verified file was already there
    fetched_bytes: int
    attempts: int


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def check_free_disk(directory: Path, needed_bytes: int, margin_bytes: int, what: str) -> None:
    """Raise DiskFullError unless `directory` has room for `needed_bytes` plus a safety margin."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed_bytes + margin_bytes:
        raise DiskFullError(
            f"not enough free disk in {directory} for {what}: need {human_bytes(needed_bytes)} "
            f"plus a margin of {human_bytes(margin_bytes)} (fetch_data.min_free_gb), "
            f"but only {human_bytes(free)} is free"
        )


class HashLock:
    """First-seen sha256 and size of artifacts whose manifest entry has no hash.

    A YAML file (committed with the code) so every later fetch, on any machine,
    verifies against what was downloaded the first time. Writes are atomic and
    serialised with an flock, so parallel fetches do not lose entries.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            raw = yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError as err:
            raise DownloadError(f"{self.path}: hash lock file is not valid YAML: {err}") from None
        entries = raw.get("artifacts", {}) if isinstance(raw, dict) else None
        if not isinstance(entries, dict):
            raise DownloadError(f"{self.path}: expected a mapping 'artifacts: {{name: {{sha256, size}}}}'")
        return entries

    def get(self, name: str) -> dict | None:
        return self._read().get(name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".flock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record(self, name: str, sha256: str, size: int, url: str | None) -> None:
        with self._locked():
            entries = self._read()
            if name in entries:
                return
            entries[name] = {
                "sha256": sha256,
                "size": size,
                "url": url,
                "recorded": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            text = (
                "# First-seen sha256/size of manifest artifacts whose hash the manifest leaves null\n"
                "# (src/refexp/data/manifest.yaml). Written by fetch_data; commit it. Later fetches\n"
                "# verify against these entries; delete an entry only to accept a new upstream file.\n"
                + yaml.safe_dump({"artifacts": dict(sorted(entries.items()))}, sort_keys=False)
            )
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)
        log.info("recorded first-seen sha256 of %s in %s: %s", name, self.path, sha256)


class _Transient(Exception):
    """Worth retrying on the same mirror."""


class _Permanent(Exception):
    """Give up on this mirror."""


def _expected(artifact: Artifact, lock: HashLock | None) -> tuple[int | None, str | None, str]:
    locked = lock.get(artifact.name) if lock is not None else None
    size = artifact.size if artifact.size is not None else (locked or {}).get("size")
    if artifact.sha256:
        return size, artifact.sha256.lower(), "manifest"
    if locked and locked.get("sha256"):
        return size, str(locked["sha256"]).lower(), f"lock file {lock.path}"
    return size, None, ""


def _verify(path: Path, size: int | None, sha256: str | None, source: str) -> str:
    """Return the file's sha256; raise _Permanent on a size or hash mismatch."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise _Permanent(f"size mismatch: got {actual_size} bytes, expected {size}")
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256:
        raise _Permanent(f"sha256 mismatch: got {actual}, expected {sha256} (from {source})")
    return actual


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    _stamp(path).write_text(f"{sha256} {st.st_size} {st.st_mtime_ns}\n")


def _stamped_sha(path: Path) -> str | None:
    """The sha256 recorded when `path` was verified, if the file is unchanged since."""
    try:
        sha, size, mtime = _stamp(path).read_text().split()
        st = path.stat()
    except (OSError, ValueError):
        return None
    return sha if int(size) == st.st_size and int(mtime) == st.st_mtime_ns else None


def _write_chunks(response: requests.Response, out, bar: tqdm, part: Path, received: list[int]) -> None:
    for chunk in response.iter_content(CHUNK_BYTES):
        if not chunk:
            continue
        try:
            out.write(chunk)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"disk full while writing {part} ({err.strerror}); free some space and rerun") from None
            raise
        received[0] += len(chunk)
        bar.update(len(chunk))


def _attempt(
    session: requests.Session,
    url: str,
    part: Path,
    name: str,
    expected_size: int | None,
    policy: RetryPolicy,
    margin_bytes: int,
    progress: bool,
    received: list[int],
) -> None:
    """One GET of `url` into `part`, resuming what is there; adds the bytes received to `received[0]`."""
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have == expected_size:
        return
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    # identity: byte offsets for Range must be those of the file, not of a gzip transfer encoding.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = (policy.timeout_seconds, policy.timeout_seconds)
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as response:
            status = response.status_code
            if status == 416 and have:
                match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
                if match and int(match.group(1)) == have:
                    return  # the partial file is already complete
                part.unlink()
                raise _Transient(f"HTTP 416 for a resume at byte {have}; restarting from zero")
            if status in PERMANENT_HTTP:
                raise _Permanent(f"HTTP {status} {response.reason}")
            if status >= 400:
                raise _Transient(f"HTTP {status} {response.reason}")
            content_type = response.headers.get("Content-Type", "")
            if content_type.startswith("text/html") and not name.endswith((".html", ".htm")):
                # Dead hosts and file-sharing sites answer 200 with a login, quota or "confirm" page;
                # never take that page for the artifact (nor record its hash in the lock file).
                raise _Permanent(f"got an HTML page ({content_type}) instead of the file")
            total: int | None = None
            if status == 206:
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != have:
                    part.unlink(missing_ok=True)
                    raise _Transient(f"unusable Content-Range {response.headers.get('Content-Range')!r}; restarting")
                total = None if match.group(3) == "*" else int(match.group(3))
                mode = "ab"
            else:
                if have:
                    log.info("%s: server ignored the Range request; restarting from zero", url)
                have, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if total is not None and expected_size is not None and total != expected_size:
                raise _Permanent(f"server offers {total} bytes, expected {expected_size}")
            # Keep the bytes that did arrive when the connection drops (urllib3 would discard the
            # last read and raise); the length check below turns the short body into a resume.
            if hasattr(response.raw, "enforce_content_length"):
                response.raw.enforce_content_length = False
            size = total if total is not None else expected_size
            check_free_disk(part.parent, max(0, (size or 0) - have), margin_bytes, name)
            with open(part, mode) as out, tqdm(
                total=size,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                disable=not progress,
                mininterval=0.5,
                leave=False,
            ) as bar:
                _write_chunks(response, out, bar, part, received)
    except requests.RequestException as err:
        raise _Transient(f"{type(err).__name__}: {err}") from None
    now = part.stat().st_size if part.exists() else 0
    if total is not None and now < total:
        raise _Transient(f"connection closed after {now} of {total} bytes")


def download(
    artifact: Artifact,
    dest_dir: str | Path,
    *,
    policy: RetryPolicy = RetryPolicy(),
    lock: HashLock | None = None,
    min_free_bytes: int = 0,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> DownloadResult:
    """Download `artifact` into `dest_dir/<name>` (verified), trying its mirrors in order."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / artifact.name
    part = dest_dir / (artifact.name + ".part")
    size, sha256, source = _expected(artifact, lock)

    if final.exists():
        try:
            known = _stamped_sha(final)
            if known is None or (sha256 is not None and known != sha256) or (
                size is not None and final.stat().st_size != size
            ):
                known = _verify(final, size, sha256, source)
                _write_stamp(final, known)
            if lock is not None and sha256 is None:
                lock.record(artifact.name, known, final.stat().st_size, None)
            log.info("%s: already downloaded and verified", final)
            return DownloadResult(final, known, final.stat().st_size, None, 0, 0)
        except _Permanent as err:
            log.warning("%s: existing file fails verification (%s); downloading again", final, err)
            final.unlink()
            _stamp(final).unlink(missing_ok=True)

    own_session = session is None
    session = session or requests.Session()
    failures: list[tuple[str, str]] = []
    attempts = 0
    received = [0]
    try:
        for url in artifact.urls:
            reason = ""
            for retry in range(policy.retries + 1):
                attempts += 1
                try:
                    _attempt(session, url, part, artifact.name, size, policy, min_free_bytes, progress, received)
                    actual = _verify(part, size, sha256, source)
                except _Transient as err:
                    reason = str(err)
                    if retry < policy.retries:
                        wait = policy.delay(retry)
                        log.warning("%s: %s; retry %d/%d in %.1f s", url, reason, retry + 1, policy.retries, wait)
                        sleep(wait)
                        continue
                    reason = f"{reason} (gave up after {policy.retries + 1} attempts)"
                    break
                except _Permanent as err:
                    reason = str(err)
                    if reason.startswith(("sha256 mismatch", "size mismatch")):
                        part.unlink(missing_ok=True)  # never resume from bad bytes
                    break
                part.replace(final)
                _write_stamp(final, actual)
                if lock is not None and sha256 is None:
                    lock.record(artifact.name, actual, final.stat().st_size, url)
                log.info("%s: downloaded from %s (%s)", artifact.name, url, human_bytes(final.stat().st_size))
                return DownloadResult(final, actual, final.stat().st_size, url, received[0], attempts)
            log.warning("%s: giving up on %s: %s", artifact.name, url, reason)
            failures.append((url, reason))
    finally:
        if own_session:
            session.close()
    raise MirrorsExhausted(artifact.name, failures)

