"""refexp.data.download against the fault-injecting server on 127.0.0.1."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections import namedtuple

import pytest
import yaml

from refexp.data import download as dl
from refexp.data.download import (
    Artifact,
    DiskFullError,
    HashLock,
    MirrorsExhausted,
    RetryPolicy,
    download,
)

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = RetryPolicy(retries=3, backoff_seconds=0.5, backoff_factor=2.0, timeout_seconds=5)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_connection_drop_mid_file_is_resumed_with_range(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.faults["/a.bin"] = ["drop"]
    sleeps = Sleeps()
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)

    result = download(art, tmp_path, policy=FAST, sleep=sleeps, progress=False)

    assert result.path.read_bytes() == PAYLOAD
    ranges = server.hits("/a.bin")
    assert ranges[0] is None
    # The second request resumed exactly where the first stopped (half the body arrived).
    assert ranges[1] == f"bytes={len(PAYLOAD) // 2}-"
    assert result.fetched_bytes == len(PAYLOAD)
    assert sleeps == [0.5]
    assert not (tmp_path / "a.bin.part").exists()


def test_two_drops_then_success_backs_off_exponentially(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.faults["/a.bin"] = ["drop", "drop"]
    sleeps = Sleeps()
    art = Artifact("a.bin", (server.url("/a.bin"),), sha256=SHA)  # size unknown: Content-Length used

    result = download(art, tmp_path, policy=FAST, sleep=sleeps, progress=False)

    assert result.path.read_bytes() == PAYLOAD
    assert sleeps == [0.5, 1.0]
    assert len(server.hits("/a.bin")) == 3


def test_500_then_200(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.faults["/a.bin"] = ["500"]
    sleeps = Sleeps()
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)

    result = download(art, tmp_path, policy=FAST, sleep=sleeps, progress=False)

    assert result.path.read_bytes() == PAYLOAD
    assert result.attempts == 2
    assert sleeps == [0.5]


def test_first_mirror_404_second_works_without_retrying_the_404(server, tmp_path):
    server.files["/mirror2/a.bin"] = PAYLOAD
    sleeps = Sleeps()
    art = Artifact("a.bin", (server.url("/gone/a.bin"), server.url("/mirror2/a.bin")), sha256=SHA)

    result = download(art, tmp_path, policy=FAST, sleep=sleeps, progress=False)

    assert result.url == server.url("/mirror2/a.bin")
    assert result.path.read_bytes() == PAYLOAD
    assert len(server.hits("/gone/a.bin")) == 1  # a 404 is permanent: no retries, no waiting
    assert sleeps == []


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.faults["/a.bin"] = ["drop", "ignore-range"]
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)

    result = download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)

    assert result.path.read_bytes() == PAYLOAD


def test_wrong_checksum_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    wrong = "0" * 64
    art = Artifact("a.bin", (server.url("/a.bin"),), sha256=wrong)

    with pytest.raises(MirrorsExhausted) as err:
        download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)

    msg = str(err.value)
    assert "a.bin" in msg and server.url("/a.bin") in msg
    assert f"sha256 mismatch: got {SHA}, expected {wrong} (from manifest)" in msg
    assert sorted(os.listdir(tmp_path)) == []  # neither the file nor a partial to resume from


def test_all_mirrors_failed_lists_each_url_and_its_reason(server, tmp_path):
    server.faults["/flaky.bin"] = ["503"] * 10
    art = Artifact("a.bin", (server.url("/gone.bin"), server.url("/flaky.bin"), "http://127.0.0.1:9/refused.bin"))
    policy = RetryPolicy(retries=1, backoff_seconds=0.0, timeout_seconds=2)

    with pytest.raises(MirrorsExhausted) as err:
        download(art, tmp_path, policy=policy, sleep=Sleeps(), progress=False)

    failures = dict(err.value.failures)
    assert list(failures) == [server.url("/gone.bin"), server.url("/flaky.bin"), "http://127.0.0.1:9/refused.bin"]
    assert failures[server.url("/gone.bin")].startswith("HTTP 404")
    assert failures[server.url("/flaky.bin")].startswith("HTTP 503")
    assert "gave up after 2 attempts" in failures[server.url("/flaky.bin")]
    assert "ConnectionError" in failures["http://127.0.0.1:9/refused.bin"]
    msg = str(err.value)
    assert "all 3 URL(s) failed" in msg
    for url in failures:
        assert f"  - {url}: " in msg


def test_full_disk_is_refused_before_downloading(server, tmp_path, monkeypatch):
    server.files["/a.bin"] = PAYLOAD
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)

    with pytest.raises(DiskFullError, match=r"not enough free disk .* for a\.bin: need 293\.0 KiB"):
        download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)
    assert not (tmp_path / "a.bin").exists()


def test_disk_filling_up_while_writing_is_a_clear_error(server, tmp_path, monkeypatch):
    server.files["/a.bin"] = PAYLOAD
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f) if "a" in mode or "w" in mode and str(path).endswith(".part") else f

    monkeypatch.setattr(dl, "open", fake_open, raising=False)
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)

    with pytest.raises(DiskFullError, match=r"disk full while writing .*a\.bin\.part"):
        download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)
    assert len(server.hits("/a.bin")) == 1  # not retried: another mirror would not help
    assert not (tmp_path / "a.bin").exists()


def test_unknown_hash_is_locked_on_first_sight_and_verified_later(server, tmp_path):
    lock = HashLock(tmp_path / "lock.yaml")
    server.files["/a.bin"] = PAYLOAD
    art = Artifact("a.bin", (server.url("/a.bin"),))

    download(art, tmp_path / "dl", policy=FAST, lock=lock, sleep=Sleeps(), progress=False)
    entry = yaml.safe_load((tmp_path / "lock.yaml").read_text())["artifacts"]["a.bin"]
    assert entry["sha256"] == SHA and entry["size"] == len(PAYLOAD)
    assert entry["url"] == server.url("/a.bin")

    # Upstream silently changes the file: a fresh machine (no cached copy) must notice.
    shutil.rmtree(tmp_path / "dl")
    server.files["/a.bin"] = PAYLOAD[::-1]
    with pytest.raises(MirrorsExhausted, match=r"sha256 mismatch: got [0-9a-f]{64}, expected " + SHA + r" \(from lock file"):
        download(art, tmp_path / "dl", policy=FAST, lock=lock, sleep=Sleeps(), progress=False)


def test_verified_file_is_not_downloaded_again(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)
    download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)

    again = download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)

    assert again.fetched_bytes == 0 and again.url is None
    assert len(server.hits("/a.bin")) == 1


def test_corrupted_cached_file_is_downloaded_again(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)
    download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)
    (tmp_path / "a.bin").write_bytes(b"x" * len(PAYLOAD))

    again = download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)

    assert again.path.read_bytes() == PAYLOAD
    assert len(server.hits("/a.bin")) == 2


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    art = Artifact("a.bin", (server.url("/a.bin"),), size=len(PAYLOAD), sha256=SHA)

    result = download(art, tmp_path, policy=FAST, sleep=Sleeps(), progress=False)

    assert server.hits("/a.bin") == ["bytes=1000-"]
    assert result.fetched_bytes == len(PAYLOAD) - 1000
    assert result.path.read_bytes() == PAYLOAD


def test_backoff_is_capped():
    policy = RetryPolicy(backoff_seconds=2, backoff_factor=3, max_backoff_seconds=20)
    assert [policy.delay(k) for k in range(4)] == [2, 6, 18, 20]


def test_html_page_instead_of_the_file_is_refused_and_not_locked(server, tmp_path):
    lock = HashLock(tmp_path / "lock.yaml")
    server.files["/a.bin"] = PAYLOAD
    server.faults["/drive/a.bin"] = ["html"]
    server.files["/drive/a.bin"] = PAYLOAD
    art = Artifact("a.bin", (server.url("/drive/a.bin"), server.url("/a.bin")))  # no size, no hash

    result = download(art, tmp_path / "dl", policy=FAST, lock=lock, sleep=Sleeps(), progress=False)

    assert result.url == server.url("/a.bin")
    assert yaml.safe_load((tmp_path / "lock.yaml").read_text())["artifacts"]["a.bin"]["sha256"] == SHA
