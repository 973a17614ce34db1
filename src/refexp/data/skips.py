"""Bad input, made visible: `DataError` for input that cannot be read at all,
`SkipCounter` for single records a loader drops, and `read_json`.

A loader never drops a record silently: it either raises `DataError` (whose
message names the file and the record) or counts the record under a reason in
a `SkipCounter`, whose `as_metrics()` goes into the stage's metrics.

A SkipCounter also keeps how many input records were read, per unit
(`read("expressions", n)`), so a stage can state rows + skips = input. Records
that are kept with a missing or unusable field (no mask, no image) are counted
in a second SkipCounter reported under `kept_with_defect/`, never as skips.
"""
from __future__ import annotations

import json
import logging
import math
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

    def __init__(self, max_examples: int = 5, kind: str = "skipped"):
        self.max_examples = max_examples
        self.kind = kind  # for the log: "skipped", or "kept with a defect" for a defect counter
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[tuple[str, str]]] = {}
        self.inputs: Counter[str] = Counter()  # records read, per unit

    def add(self, reason: str, file: str | Path, record_id: Any, n: int = 1) -> None:
        """Count `n` skipped records (e.g. n expressions of one bad region) under `reason`."""
        if n <= 0:
            return
        self.counts[reason] += n
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append((str(file), str(record_id)))
            log.warning("%s %d record(s), reason %s: %s, record %s", self.kind, n, reason, file, record_id)

    def read(self, unit: str, n: int = 1) -> None:
        """Count `n` input records of `unit` (e.g. "expressions"), before any is judged."""
        self.inputs[unit] += n

    def merge(self, other: SkipCounter) -> None:
        """Add another counter's skips, examples and inputs to this one."""
        self.counts.update(other.counts)
        self.inputs.update(other.inputs)
        for reason, examples in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(examples[: max(self.max_examples - len(mine), 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_metrics(self, prefix: str = "skipped/") -> dict[str, int]:
        return {f"{prefix}{reason}": count for reason, count in sorted(self.counts.items())}

    def input_metrics(self, prefix: str = "input/") -> dict[str, int]:
        return {f"{prefix}{unit}": count for unit, count in sorted(self.inputs.items())}

    def summary(self) -> str:
        """'reason n, reason n' for messages; 'none' when nothing was counted."""
        return ", ".join(f"{reason} {n}" for reason, n in sorted(self.counts.items())) or "none"

    def __repr__(self) -> str:
        return f"SkipCounter({dict(self.counts)})"


def is_number(value: Any) -> bool:
    """A finite JSON number: int or float, not bool (a subclass of int), not NaN or inf."""
    return type(value) in (int, float) and math.isfinite(value)


def numbers(values: Any, n: int) -> bool:
    """`values` is a list of exactly `n` finite numbers (a box, a size)."""
    return isinstance(values, list) and len(values) == n and all(is_number(v) for v in values)


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict:
    # json.load keeps the last of two equal keys; here the second one is an error.
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_json(path: str | Path, unique_keys: bool = False) -> Any:
    """json.load, with a missing, truncated or malformed file reported as DataError naming it.

    unique_keys: a key repeated inside one object (json.load would silently keep
    the last value) is a DataError naming the key.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f, object_pairs_hook=_unique_object) if unique_keys else json.load(f)
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except _DuplicateKey as e:
        raise DataError(path, "key listed twice in one JSON object (the first value would be lost)",
                        record=e.key) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"malformed JSON: {e}") from e
    except RecursionError as e:  # a hostile file nested thousands deep
        raise DataError(path, "malformed JSON: nested too deeply") from e
