"""Put a dataset's raw layout in place, from one of three sources.

- synthetic: the embedded world (refexp.data.synthetic), in the real formats;
- local: an existing copy imported from `datasets.<name>.root`;
- official: the papers' download hosts (refexp.data.official).

Every source writes into a temporary sibling of `out_dir` and renames it at the
end, so a killed fetch never leaves a half-written raw layout that looks finished.
Nothing downstream knows which source was used.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from refexp.config import Config
from refexp.data.skips import DataError

log = logging.getLogger(__name__)


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def _fresh_tmp(out_dir: Path) -> Path:
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def fetch_synthetic(cfg: Config, name: str, out_dir: Path) -> dict:
    from refexp.data import synthetic

    fmt = cfg.dataset(name).format
    tmp = _fresh_tmp(out_dir)
    params = cfg.synthetic.model_dump(exclude={"n_images"})
    counts = synthetic.generate(tmp / "world", cfg.synthetic.n_images, cfg.run.seed, formats=(fmt,), **params)
    (tmp / "world" / fmt).rename(tmp / "layout")
    shutil.rmtree(tmp / "world")
    _replace_dir(tmp / "layout", out_dir)
    shutil.rmtree(tmp)
    return {f"synthetic/{k}": v for k, v in counts.items() if isinstance(v, (int, float))}


def _check_links(src: Path) -> None:
    """A symlink that dangles or points at a folder holding it is a DataError naming it: copytree follows
    links, so a loop would copy the tree ~40 times over (two loops: 2**40) before failing."""
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        for name in dirnames + filenames:
            link = os.path.join(dirpath, name)
            if not os.path.islink(link):
                continue
            target = os.path.realpath(link)
            if not os.path.exists(target):
                raise DataError(link, f"symlink to {os.readlink(link)!r}, which does not exist or loops")
            # Every folder on the way down, as it really is (a loop may pass through a link outside src).
            here, above = Path(dirpath), set()
            while True:
                above.add(os.path.realpath(here))
                if here == src or here == here.parent:
                    break
                here = here.parent
            if os.path.isdir(target) and target in above:
                raise DataError(link, f"symlink to {target}, a folder that holds it: the copy would never end")


def fetch_local(cfg: Config, name: str, out_dir: Path, root: Path = Path(".")) -> dict:
    src = (root / cfg.dataset(name).root).resolve()
    if not src.is_dir():
        raise DataError(src, f"directory not found (params datasets.{name}.root)")
    _check_links(src)
    tmp = _fresh_tmp(out_dir)
    # A real copy, not hard links: DVC moves and chmods its outputs, which must never touch the source.
    try:
        shutil.copytree(src, tmp, symlinks=False)
    except shutil.Error as err:
        shutil.rmtree(tmp, ignore_errors=True)
        failures = err.args[0] if err.args and isinstance(err.args[0], list) else [str(err)]
        raise DataError(src, f"import failed for {len(failures)} file(s), first: {failures[0]}") from None
    n_files = sum(1 for p in tmp.rglob("*") if p.is_file())
    _replace_dir(tmp, out_dir)
    log.info("imported %d files from %s", n_files, src)
    return {"local/files": n_files}


def fetch(cfg: Config, name: str, out_dir: Path, root: Path = Path(".")) -> dict:
    """Fetch dataset `name` into `out_dir`; return the stage metrics."""
    source = cfg.dataset(name).source
    if source == "synthetic":
        return fetch_synthetic(cfg, name, out_dir)
    if source == "local":
        return fetch_local(cfg, name, out_dir, root)
    from refexp.data import official

    return official.fetch_official(cfg, name, out_dir)
