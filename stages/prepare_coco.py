"""prepare_coco: COCO 2014 raw layout -> caption and instance tables and a train-only caption vocabulary.

Inputs: data/raw/<item>/ (annotations/{instances,captions}_{train,val}2014.json, train2014/, val2014/).
Outputs: data/prepare_coco/<item>/{captions.parquet, instances.parquet, vocab.txt},
         reports/metrics/prepare_coco/<item>.json (input/<unit> = rows + every skipped/<unit>/<reason>,
         for units captions and instances; kept_with_defect/<unit>/<reason>; checks/<name>).
Params: prepare_coco.min_word_count, prepare_coco.max_tokens, datasets.
"""
from __future__ import annotations

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.data.prepare import prepare_coco
from refexp.paths import Paths
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    section = cfg.prepare_coco
    captions, instances, vocab, metrics = prepare_coco(paths.raw(item), item, section.min_word_count,
                                                       section.max_tokens, paths.root)
    out = paths.prepared(item)
    write_parquet(captions, out / "captions.parquet")
    write_parquet(instances, out / "instances.parquet")
    vocab.save(paths.vocab(item))
    write_json(paths.metrics("prepare_coco", item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
