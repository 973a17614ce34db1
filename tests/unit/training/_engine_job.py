"""Subprocess body for the kill-and-resume test: trains a tiny model slowly so it can be killed."""
import sys
import time
from pathlib import Path

from tests.unit.training.test_engine import make_setup

if __name__ == "__main__":
    out_dir, delay = Path(sys.argv[1]), float(sys.argv[2])
    model, data, loss_fn, cfg = make_setup(delay=delay)
    from refexp.training.engine import fit

    fit(model, data, loss_fn, cfg, out_dir, seed=3, progress=False)
    time.sleep(0)
