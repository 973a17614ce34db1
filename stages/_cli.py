"""The shared CLI of every stage: `python -m stages.<name> [item]`.

Loads params.yaml into the typed config, sets up logging, runs the stage and
prints its metrics. Stages take no hyper-parameter flags: only the item
(a dataset or variant name) chosen by dvc.yaml's foreach.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Callable

from refexp.config import Config, ConfigError, load_config
from refexp.data.skips import DataError


def stage_main(run: Callable[..., dict], takes_item: bool = True) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:]
    if len(args) != (1 if takes_item else 0):
        usage = "<item>" if takes_item else ""
        sys.exit(f"usage: python -m {run.__module__} {usage}".rstrip())
    try:
        cfg: Config = load_config()
        metrics = run(cfg, *args)
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps(metrics, indent=2, sort_keys=True))
