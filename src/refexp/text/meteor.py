"""METEOR 1.5 through pycocoevalcap's jar, batched over several JVMs.

pycocoevalcap's `Meteor.compute_score` starts `java -jar -Xmx2G meteor-1.5.jar - - -stdio
-l en -norm` (cwd = the jar's folder), sends one `SCORE ||| ref ||| hyp` line per pair
(hypothesis with '|||' removed and double spaces collapsed; the jar's `-norm` does
lowercasing and tokenisation), collects the statistics lines, then sends one
`EVAL ||| stats ||| stats ...` line and reads one score per pair plus a corpus score.
`MeteorPool` drives the same protocol and the same command, only pipelined in chunks
and spread over `n_jvms` processes in threads, so each per-pair score equals
`Meteor().compute_score(...)`'s (tests/unit/text/test_meteor.py checks this).

A JVM that dies mid-batch (EOF or broken pipe) is restarted and its whole batch
retried, up to `max_retries` times; restarts are counted in `stats`.

No JVM outlives its Python parent, even one killed by SIGKILL: each is started with
`refexp.processes.spawn_tied` (prctl PR_SET_PDEATHSIG on Linux, from a thread that lives as
long as the process, since the pool's executor threads end after every `score` call).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue
from typing import Sequence

import numpy as np

from refexp.processes import LINUX, spawn_tied

log = logging.getLogger(__name__)

# Bytes of SCORE lines written before reading their replies: stays well under the
# 64 KiB pipe buffer so neither side can block on a full pipe.
_CHUNK_BYTES = 24_000


def meteor_jar_dir() -> Path:
    from pycocoevalcap.meteor import meteor as pycoco_meteor

    return Path(pycoco_meteor.__file__).resolve().parent


def meteor_command(xmx: str = "2G") -> list[str]:
    """pycocoevalcap's own command line (meteor.py)."""
    return ["java", "-jar", f"-Xmx{xmx}", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"]


def _clean_hypothesis(text: str) -> str:
    # exactly pycocoevalcap's Meteor._stat
    return text.replace("|||", "").replace("  ", " ")


class JvmDied(RuntimeError):
    """The METEOR process closed its pipes mid-batch."""


class MeteorProcess:
    """One METEOR JVM speaking the -stdio protocol."""

    def __init__(self, xmx: str = "2G"):
        self.xmx = xmx
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = spawn_tied(
            meteor_command(self.xmx), cwd=meteor_jar_dir(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _readline(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise JvmDied(f"METEOR JVM (pid {self.proc.pid}) closed its output")
        return line.decode().strip()

    def _write(self, text: str) -> None:
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise JvmDied(f"METEOR JVM (pid {self.proc.pid}) closed its input: {e}") from e

    def score_chunk(self, hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
        """Segment scores of one chunk (pipelined SCORE lines, then one EVAL line)."""
        lines = "".join(f"SCORE ||| {r} ||| {_clean_hypothesis(h)}\n" for h, r in zip(hyps, refs))
        self._write(lines)
        stats = [self._readline() for _ in hyps]
        self._write("EVAL ||| " + " ||| ".join(stats) + "\n")
        scores = [float(self._readline()) for _ in hyps]
        self._readline()  # corpus-level score, unused
        return scores

    def score(self, hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
        out: list[float] = []
        i = 0
        while i < len(hyps):
            j, size = i, 0
            while j < len(hyps) and (j == i or size < _CHUNK_BYTES):
                size += len(hyps[j]) + len(refs[j]) + 16
                j += 1
            out.extend(self.score_chunk(hyps[i:j], refs[i:j]))
            i = j
        return out

    def restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if LINUX or self.proc.poll() is not None:
            self.proc.kill()
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        self.proc.wait()
        self.proc = None


class MeteorPool:
    """Score (hypothesis, reference) pairs on `n_jvms` METEOR processes in parallel."""

    def __init__(self, n_jvms: int = 2, batch_size: int = 2000, max_retries: int = 3, xmx: str = "2G",
                 process_factory=MeteorProcess):
        if n_jvms < 1 or batch_size < 1:
            raise ValueError("n_jvms and batch_size must be >= 1")
        self.n_jvms, self.batch_size, self.max_retries = n_jvms, batch_size, max_retries
        self.xmx = xmx
        self._factory = process_factory
        self._idle: Queue = Queue()
        self._procs: list = []
        self._lock = threading.Lock()
        self.stats = {"pairs": 0, "batches": 0, "restarts": 0, "retried_batches": 0}

    def _acquire(self):
        with self._lock:
            if self._idle.empty() and len(self._procs) < self.n_jvms:
                proc = self._factory(self.xmx)
                self._procs.append(proc)
                return proc
        return self._idle.get()

    def _run_batch(self, hyps: list[str], refs: list[str]) -> list[float]:
        proc = self._acquire()
        try:
            for attempt in range(self.max_retries + 1):
                try:
                    return proc.score(hyps, refs)
                except JvmDied as e:
                    if attempt == self.max_retries:
                        raise
                    log.warning("%s; restarting it and retrying its batch of %d pairs", e, len(hyps))
                    with self._lock:
                        self.stats["restarts"] += 1
                        self.stats["retried_batches"] += 1
                    proc.restart()
        finally:
            self._idle.put(proc)
        raise AssertionError("unreachable")

    def score(self, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """METEOR of each hypothesis against its one reference."""
        if len(hypotheses) != len(references):
            raise ValueError("hypotheses and references differ in length")
        n = len(hypotheses)
        out = np.empty(n, np.float64)
        if n == 0:
            return out
        bounds = list(range(0, n, self.batch_size)) + [n]
        spans = list(zip(bounds[:-1], bounds[1:]))
        with ThreadPoolExecutor(max_workers=self.n_jvms) as ex:
            futures = [ex.submit(self._run_batch, list(hypotheses[a:b]), list(references[a:b])) for a, b in spans]
            for (a, b), fut in zip(spans, futures):
                out[a:b] = fut.result()
        self.stats["pairs"] += n
        self.stats["batches"] += len(spans)
        return out

    def close(self) -> None:
        for proc in self._procs:
            proc.close()
        self._procs.clear()
        while not self._idle.empty():
            self._idle.get()

    def __enter__(self) -> "MeteorPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def meteor_pids(pool: MeteorPool) -> list[int]:
    """Process ids of the pool's running JVMs (for monitoring and tests)."""
    return [p.pid for p in pool._procs if getattr(p, "proc", None) is not None]


__all__ = ["MeteorPool", "MeteorProcess", "JvmDied", "meteor_command", "meteor_jar_dir", "meteor_pids"]
