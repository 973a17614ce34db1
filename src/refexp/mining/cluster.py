"""The Dask client the mining join runs on: a real scheduler when params name one,
else an in-process LocalCluster (threads; the numba join releases the GIL)."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from refexp.config import DaskConfig

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(cfg: DaskConfig) -> Iterator[object]:
    from distributed import Client, LocalCluster

    if cfg.scheduler_address:
        log.info("mining join on the Dask scheduler at %s", cfg.scheduler_address)
        with Client(cfg.scheduler_address) as client:
            yield client
        return
    with LocalCluster(n_workers=cfg.local_workers, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client
