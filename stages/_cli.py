"""The shared CLI of every stage: `python -m stages.<name> [item]`.

Loads params.yaml into the typed config, sets up logging, runs the stage and
prints its metrics. Stages take no hyper-parameter flags: only the item
(a dataset or variant name) chosen by dvc.yaml's foreach.

A user's mistake or a full or read-only disk ends in one line naming the file and
the cause (exit status 1), never a bare traceback; the traceback is logged at debug
level (REFEXP_LOG_LEVEL=DEBUG shows it).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Callable

from refexp.config import Config, ConfigError, load_config
from refexp.data.archives import ArchiveError, UnsafeArchiveError
from refexp.data.official import DownloadError, ManifestError
from refexp.data.skips import DataError
from refexp.errors import CheckpointError, NonFiniteLossError, describe_os_error

log = logging.getLogger("stages")
# Errors whose message already names the file or the setting and what to do.
USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, ArchiveError, UnsafeArchiveError,
               DownloadError, ManifestError)  # fetch_data's: a bad archive, download or manifest


def stage_main(run: Callable[..., dict], takes_item: bool = True) -> None:
    logging.basicConfig(level=os.environ.get("REFEXP_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:]
    if len(args) != (1 if takes_item else 0):
        usage = "<item>" if takes_item else ""
        sys.exit(f"usage: python -m {run.__module__} {usage}".rstrip())
    try:
        cfg: Config = load_config()
        metrics = run(cfg, *args)
    except USER_ERRORS as err:
        log.debug("traceback", exc_info=True)
        sys.exit(f"error: {err}")
    except OSError as err:
        log.debug("traceback", exc_info=True)
        sys.exit(f"error: {describe_os_error(err)}")
    print(json.dumps(metrics, indent=2, sort_keys=True))
