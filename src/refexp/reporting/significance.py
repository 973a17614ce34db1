"""The reports' "is this gap more than test-set noise?" table, shared by every model's report."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from refexp.metrics.bootstrap import paired_difference

# Columns that identify a test query in every model's predictions table.
QUERY_KEYS = ["region_id", "expression"]


def per_query_scores(prediction_files: dict[str, Path], score: Callable[[pd.DataFrame], np.ndarray],
                     columns: list[str]) -> dict[str, np.ndarray]:
    """score(table) per variant whose predictions file exists, after checking that every table lists
    the same test queries in the same order (a paired comparison needs it)."""
    out, reference = {}, None
    for variant, path in prediction_files.items():
        if not path.exists():
            continue
        table = pd.read_parquet(path, columns=[*QUERY_KEYS, *columns])
        keys = table[QUERY_KEYS]
        if reference is None:
            reference = keys
        elif not keys.equals(reference):
            raise ValueError(f"{path}: its test queries are not in the order of the other variants' predictions")
        out[variant] = np.asarray(score(table), dtype=np.float64)
    return out


VERDICT_TEXT = {"a > b": "holds", "a < b": "reversed", "not resolved": "not resolved (interval spans 0)"}


def significance_table(correct: dict[str, np.ndarray], pairs: list[tuple[str, str]], seed: int,
                       metric: str) -> list[str]:
    """Markdown lines: for each claim `a` > `b` with both variants present, the difference of `metric`
    in points, its paired-bootstrap 95% interval over the same test queries, and the verdict."""
    rows = []
    for a, b in pairs:
        if a in correct and b in correct:
            d = paired_difference(correct[a], correct[b], seed=seed)
            rows.append(f"| `{a}` > `{b}` | {100 * d.difference:+.2f} | "
                        f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}] | {VERDICT_TEXT[d.verdict]} |")
    if not rows:
        return []
    return [f"Is each gap more than test-set noise? {metric}, paired bootstrap over the same test queries "
            "(2,000 resamples, percentile 95% interval, seeded); training-seed noise comes on top "
            "(seed_study.md, from `make seed-study`, judges the same claims over training seeds).", "",
            "| claim | difference (points) | 95% interval | on our data |", "|---|---|---|---|", *rows, ""]
