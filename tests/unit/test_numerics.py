"""The pinned CPU kernel path: defaults that an explicit environment overrides, and that torch takes."""
from __future__ import annotations

import os
import subprocess
import sys

from refexp.numerics import CPU_NUMERICS, numerics_record, pin_cpu_numerics


def test_pinning_sets_defaults_and_keeps_explicit_values(monkeypatch):
    for name in CPU_NUMERICS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert pin_cpu_numerics() == {**CPU_NUMERICS, "MKL_CBWR": "COMPATIBLE"}


def test_a_stage_process_runs_on_the_pinned_path():
    # `import stages` pins before torch computes: ATen then reports AVX2 on this x86 machine.
    env = {k: v for k, v in os.environ.items() if k not in CPU_NUMERICS}
    code = "import stages, torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "AVX2"
    record = numerics_record()
    assert record["torch_cpu_capability"] == "AVX2" and record["MKL_CBWR"] == os.environ.get("MKL_CBWR", "(unset)")
