"""Prefect orchestration of the DVC stages (the only place Prefect is imported).

- flows.dag: the stage list and order from DVC, running one stage through DVC, and
  `python -m flows.dag STAGE` (make retrain): a stage trained again from scratch;
- flows.pipeline: the flow (one task per stage, retries from params.yaml) and its CLI;
- flows.serve: `make ui`, a local Prefect server on 127.0.0.1 serving the flow with a cron schedule.
"""
import os as _os
from pathlib import Path as _Path

# Prefect reads its settings when first imported, so the local defaults go here, before any
# `import prefect`: its home (database, logs) stays under the repo (.prefect/, git-ignored)
# instead of ~/.prefect, and nothing is reported home. Explicit environment values win.
_os.environ.setdefault("PREFECT_HOME", str(_Path(__file__).resolve().parents[1] / ".prefect"))
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
_os.environ.setdefault("DO_NOT_TRACK", "1")
# Without PREFECT_API_URL, `python -m flows.pipeline` starts a temporary local API; on a busy
# 2-core machine its start-up can exceed Prefect's 20 s default.
_os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
