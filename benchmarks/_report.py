"""What every benchmark script shares: a warm timer and replacing its own section of reports/benchmarks.md."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "reports" / "benchmarks.md"


def timed(fn: Callable[[], object], steps: int, warmup: int = 2) -> float:
    """Mean seconds per call of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def write_section(heading: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the section that starts with `heading` (up to the next `## `), or append it."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.rstrip("\n") + "\n"
    if pattern.search(current):
        new = pattern.sub(lambda _: body + "\n", current).rstrip("\n") + "\n"
    else:
        new = current.rstrip("\n") + "\n\n" + body
    path.write_text(new)
