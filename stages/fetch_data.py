"""fetch_data: put dataset <item>'s raw layout in data/raw/<item>.

Inputs: the source named by datasets.<item>.source (synthetic world, a local copy, or the official hosts).
Outputs: data/raw/<item>/ (the dataset's own released layout), reports/metrics/fetch_data/<item>.json.
Params: run.seed, datasets, synthetic, fetch_data.
"""
from __future__ import annotations

from refexp.artifacts import write_json
from refexp.config import Config
from refexp.data.fetch import fetch
from refexp.paths import Paths
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    metrics = {"source": cfg.dataset(item).source, **fetch(cfg, item, paths.raw(item), paths.root)}
    write_json(paths.metrics("fetch_data", item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
