"""One CPU kernel path on every x86 machine, so a run's numbers do not depend on which CPU ran it.

Measured here (benchmarks/numerics.py, reports/benchmarks.md "Numerics"): each of three libraries picks
its kernels by the CPU's instruction set, and each choice moves a training run's floats: ATen's own
vectorised kernels (reductions, softmax, activations), MKL's GEMM (Linear, LSTM) and oneDNN's
convolutions. A machine with AVX-512 would take other paths than this AVX2 machine and drift from the
committed numbers after a few hundred steps. `pin_cpu_numerics()` caps all three at AVX2, which every
x86-64 CPU since 2013 has; it must run before torch computes anything (the stage CLI package, the
benchmarks, the tests and the Makefile do it). Values already in the environment win.

Not covered: a CPU without AVX2, other architectures (aarch64), other library versions (requirements.lock
pins them), and CUDA, whose kernels differ from the CPU's anyway.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

CPU_NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's dispatch (default | avx2 | avx512)
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility branch
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's highest instruction set
}


def pin_cpu_numerics() -> dict[str, str]:
    """Set the three variables where unset; return the values in effect."""
    for name, value in CPU_NUMERICS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in CPU_NUMERICS}


def numerics_record() -> dict[str, str]:
    """What a report states: the settings in effect and the kernel path torch actually took."""
    import torch

    return {**{name: os.environ.get(name, "(unset)") for name in CPU_NUMERICS},
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
