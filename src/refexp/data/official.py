"""Source `official`: download a dataset's released artifacts and lay them out in its raw layout.

The manifest (src/refexp/data/manifest.yaml, data not code) maps each artifact to
its URLs, size and sha256, and each dataset to placements of artifacts in
data/raw/<dataset>/ — the same layout the `local` source imports and the
`synthetic` source writes, so nothing downstream knows where the data came from.

Order of work, so that a failure never leaves a layout that looks finished:
1. check that the disk can hold what is still to download and extract;
2. download every artifact (refexp.data.download: mirrors, resume, retries) and
   verify it — nothing is extracted until all of them are verified;
3. extract / copy into `<out_dir>.tmp` (refexp.data.archives: unsafe members refused);
4. rename `<out_dir>.tmp` to `out_dir`.
"""
from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from refexp.config import Config, FetchDataConfig
from refexp.data import archives
from refexp.data.download import (
    Artifact,
    DiskFullError,
    DownloadError,
    HashLock,
    RetryPolicy,
    check_free_disk,
    download,
)
from refexp.paths import Paths

log = logging.getLogger(__name__)

GIB = 1024**3


class ManifestError(ValueError):
    """The manifest file is missing, malformed, or lacks what a dataset needs."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestArtifact(_Strict):
    urls: list[str] = Field(min_length=1)
    size: int | None = Field(None, ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    role: Literal["annotations", "proposals", "images"]
    optional: bool = False


class Placement(_Strict):
    artifact: str
    # A plain file: its path in the layout. An archive: the directory it is extracted under.
    to: str | None = None
    # An archive: {member path inside the archive: path in the layout}.
    place: dict[str, str] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "Placement":
        if (self.to is None) == (self.place is None):
            raise ValueError("give exactly one of 'to' and 'place'")
        for path in [self.to or "", *(self.place or {}).keys(), *(self.place or {}).values()]:
            if path.startswith("/") or ".." in Path(path).parts:
                raise ValueError(f"path {path!r} must stay inside the layout")
        return self


class Manifest(_Strict):
    artifacts: dict[str, ManifestArtifact]
    datasets: dict[str, list[Placement]]

    @model_validator(mode="after")
    def _artifacts_exist(self) -> "Manifest":
        for dataset, placements in self.datasets.items():
            for p in placements:
                if p.artifact not in self.artifacts:
                    raise ValueError(f"datasets.{dataset} names unknown artifact '{p.artifact}'")
        return self

    def artifact(self, name: str) -> Artifact:
        entry = self.artifacts[name]
        return Artifact(name=name, urls=tuple(entry.urls), size=entry.size, sha256=entry.sha256)


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path} (fetch_data.manifest)") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML: {err}") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ManifestError(f"{path}: {problems}") from None


def manifest_key(cfg: Config, dataset_name: str, manifest: Manifest) -> str:
    """The manifest entry of a params dataset: by name, else by its format when unambiguous."""
    if dataset_name in manifest.datasets:
        return dataset_name
    fmt = cfg.dataset(dataset_name).format
    if fmt in manifest.datasets:
        return fmt
    raise ManifestError(
        f"datasets.{dataset_name}: source 'official' but the manifest has no entry '{dataset_name}' "
        f"or '{fmt}' (have {sorted(manifest.datasets)})"
    )


def select(manifest: Manifest, key: str, subset: str, optional: list[str] | tuple[str, ...]) -> list[Placement]:
    """The placements to fetch for `subset` ('all' or 'annotations') plus the named optional artifacts."""
    unknown = sorted(set(optional) - set(manifest.artifacts))
    if unknown:
        raise ManifestError(f"fetch_data.optional_artifacts names unknown artifacts: {unknown}")
    chosen = []
    for p in manifest.datasets[key]:
        entry = manifest.artifacts[p.artifact]
        if entry.optional and p.artifact not in optional:
            continue
        if subset == "annotations" and entry.role == "images":
            continue
        chosen.append(p)
    return chosen


def retry_policy(fc: FetchDataConfig) -> RetryPolicy:
    return RetryPolicy(
        retries=fc.retries,
        backoff_seconds=fc.backoff_seconds,
        backoff_factor=fc.backoff_factor,
        max_backoff_seconds=fc.max_backoff_seconds,
        timeout_seconds=fc.timeout_seconds,
    )


def _merge_move(src: Path, dst: Path) -> None:
    """Move `src` to `dst`; directories merge into an existing directory."""
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge_move(child, dst / child.name)
        src.rmdir()
        return
    if dst.exists():
        raise ManifestError(f"two placements write the same path {dst}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def _lay_out(placement: Placement, archive_path: Path, staging: Path, scratch: Path) -> None:
    """Put one downloaded artifact into the staging layout."""
    if not archives.is_archive(archive_path):
        if placement.place is not None:
            raise ManifestError(f"{archive_path.name}: manifest says 'place' but the file is not an archive")
        _link_or_copy(archive_path, staging / placement.to)
        return
    extracted = archives.extract(archive_path, scratch / placement.artifact)
    if placement.to is not None:
        _merge_move(extracted, staging / placement.to)
        return
    for member, target in placement.place.items():
        src = extracted / member
        if not src.exists():
            found = sorted(p.name for p in extracted.iterdir())[:20]
            raise ManifestError(
                f"{archive_path}: has no member '{member}' that the manifest places at '{target}' "
                f"(top level holds {found}); the upstream archive changed or the manifest is wrong"
            )
        _merge_move(src, staging / target)
    shutil.rmtree(extracted)


def fetch_official(
    cfg: Config,
    dataset_name: str,
    out_dir: str | Path,
    downloads: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Download, verify and lay out dataset `dataset_name` in `out_dir`; return stage metrics.

    `downloads` keeps the verified archives (default: Paths.downloads) so an interrupted
    fetch resumes and a re-run only re-extracts.
    """
    fc = cfg.fetch_data
    out_dir = Path(out_dir)
    downloads = Path(downloads) if downloads is not None else Paths.from_config(cfg).downloads
    manifest = load_manifest(fc.manifest)
    key = manifest_key(cfg, dataset_name, manifest)
    placements = select(manifest, key, fc.subset, fc.optional_artifacts)
    margin = int(fc.min_free_gb * GIB)
    lock = HashLock(fc.hash_lock)

    # Up-front disk check with what the manifest knows: the rest of each download, plus
    # room to extract every archive (image archives are stored, so extracted ~ archive size).
    names = list(dict.fromkeys(p.artifact for p in placements))
    pending = 0
    for name in names:
        size = manifest.artifacts[name].size
        if size is not None and not (downloads / name).exists():
            part = downloads / f"{name}.part"
            pending += size - (part.stat().st_size if part.exists() else 0)
    extract = sum(manifest.artifacts[n].size or 0 for n in names)
    check_free_disk(downloads, pending + extract, margin, f"{dataset_name} ({len(names)} artifacts)")

    results = {}
    for name in names:
        log.info("fetching %s for %s", name, dataset_name)
        results[name] = download(
            manifest.artifact(name),
            downloads,
            policy=retry_policy(fc),
            lock=lock,
            min_free_bytes=margin,
            progress=progress,
        )

    staging = out_dir.with_name(out_dir.name + ".tmp")
    scratch = out_dir.with_name(f".{out_dir.name}.extract")
    for path in (staging, scratch):
        if path.exists():
            shutil.rmtree(path)
    staging.mkdir(parents=True)
    scratch.mkdir(parents=True)
    try:
        for placement in placements:
            _lay_out(placement, results[placement.artifact].path, staging, scratch)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"disk full while laying out {dataset_name} in {staging}: {err.strerror}") from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)

    n_files = sum(1 for p in out_dir.rglob("*") if p.is_file())
    log.info("official %s: %d artifacts, %d files in %s", dataset_name, len(names), n_files, out_dir)
    return {
        "official/artifacts": len(names),
        "official/files": n_files,
        "official/downloaded_bytes": sum(r.fetched_bytes for r in results.values()),
        "official/archive_bytes": sum(r.size for r in results.values()),
        "official/attempts": sum(r.attempts for r in results.values()),
    }


__all__ = ["fetch_official", "load_manifest", "select", "ManifestError", "DownloadError", "DiskFullError"]
