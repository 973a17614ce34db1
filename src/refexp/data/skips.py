"""Bad input, made visible: `DataError` for input that cannot be read at all,
`SkipCounter` for single records a loader drops, and `read_json`.

A loader never drops a record silently: it either raises `DataError` (whose
message names the file and the record) or counts the record under a reason in
a `SkipCounter`, whose `as_metrics()` goes into the stage's metrics.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Input that cannot be read; the message names the file and, if known, the record."""

    def __init__(self, file: str | Path, message: str, record: Any = None):
        self.file = str(file)
        self.record = record
        self.detail = message
        where = self.file if record is None else f"{self.file}, record {record!r}"
        super().__init__(f"{where}: {message}")


class SkipCounter:
    """Counts skipped records per reason and logs the first few examples of each."""

    def __init__(self, max_examples: int = 5):
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[tuple[str, str]]] = {}

    def add(self, reason: str, file: str | Path, record_id: Any, n: int = 1) -> None:
        """Count `n` skipped records (e.g. n expressions of one bad region) under `reason`."""
        if n <= 0:
            return
        self.counts[reason] += n
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append((str(file), str(record_id)))
            log.warning("skipped %d record(s), reason %s: %s, record %s", n, reason, file, record_id)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_metrics(self, prefix: str = "skipped/") -> dict[str, int]:
        return {f"{prefix}{reason}": count for reason, count in sorted(self.counts.items())}

    def __repr__(self) -> str:
        return f"SkipCounter({dict(self.counts)})"


def read_json(path: str | Path) -> Any:
    """json.load, with a missing, truncated or malformed file reported as DataError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"malformed JSON: {e}") from e
