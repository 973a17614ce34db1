"""Real phrase corpora for the mining tests, and one METEOR pool shared by them."""
from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from refexp.mining.reference import perturb
from refexp.text.meteor import MeteorPool
from tests.conftest import require_shared


def real_corpus(n_vg: int, n_referit: int, n_perturbed: int, seed: int) -> pd.DataFrame:
    """Rows (image_id, phrase): real VG and ReferIt phrases plus perturbed copies on new images."""
    vg = json.loads(require_shared("visual_genome", "v1.2", "region_descriptions.json_samples.json").read_text())
    referit = json.loads(require_shared("referit", "annotations", "referit_query_all.json").read_text())
    rng = random.Random(seed)
    vg_rows = [(f"vg{r['image_id']}", r["phrase"]) for im in vg for r in im["regions"]]
    ri_rows = [(f"ri{k.split('_')[0]}", p) for k, descs in referit.items() for p in descs]
    rows = rng.sample(vg_rows, n_vg) + rng.sample(ri_rows, n_referit)
    for i in range(n_perturbed):
        _, phrase = rng.choice(rows)
        rows.append((f"p{i % 50}", " ".join(perturb(phrase.split(), rng))))
    rng.shuffle(rows)
    return pd.DataFrame(rows, columns=["image_id", "phrase"])


@pytest.fixture(scope="session")
def meteor_pool():
    with MeteorPool(n_jvms=1, batch_size=500) as pool:
        yield pool
