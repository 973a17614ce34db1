"""The mining join through a Dask scheduler *address* (as params would name a remote cluster)."""
from __future__ import annotations

import numpy as np
import pytest

from refexp.config import DaskConfig
from refexp.mining import bleu_pairs
from refexp.mining.cluster import dask_client
from tests.unit.mining.conftest import real_corpus


@pytest.mark.shared
def test_scheduler_address_gives_identical_pairs():
    from distributed import LocalCluster

    df = real_corpus(n_vg=1500, n_referit=1500, n_perturbed=1000, seed=11)
    single = bleu_pairs(df)
    # A TCP scheduler: tasks and the scattered index travel serialised, as to a remote cluster.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        with dask_client(DaskConfig(scheduler_address=cluster.scheduler_address)) as client:
            remote = bleu_pairs(df, n_blocks=6, client=client)
    with dask_client(DaskConfig(local_workers=2)) as client:
        local = bleu_pairs(df, n_blocks=4, client=client)
    assert single.a.size > 100
    for other in (remote, local):
        order_s, order_o = np.lexsort((single.b, single.a)), np.lexsort((other.b, other.a))
        for name in ("a", "b", "bleu_ab", "bleu_ba"):
            assert np.array_equal(getattr(single, name)[order_s], getattr(other, name)[order_o]), name
