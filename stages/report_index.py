"""report_index: reports/index.md, linking every report and listing the headline test metrics.

Inputs: reports/*.md and reports/metrics/ written by the other report and evaluate stages.
Outputs: reports/index.md.
Params: report_index.headline_keys.
"""
from __future__ import annotations

from refexp.config import Config
from refexp.artifacts import keep_last_good
from refexp.paths import Paths
from refexp.reporting.index import build_index
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    # A failed or killed rendering keeps the last good report (the outputs persist in dvc.yaml).
    with keep_last_good(paths.report("index")):
        return build_index(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
