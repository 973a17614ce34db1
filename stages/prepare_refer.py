"""prepare_refer: refer API raw layout (lichengunc/refer) -> common-schema tuples with masks and a
train-only vocabulary.

Inputs: data/raw/<item>/ (<refer dataset>/refs(<split_by>).p + instances.json, images under <image_dir>;
  real or synthetic).
Outputs: data/prepare_refer/<item>/{tuples.parquet, vocab.txt}, reports/metrics/prepare_refer/<item>.json
  (input/expressions = the <split>/tuples + every skipped/<reason>; <split>/images, <split>/refs;
  kept_with_defect/<reason>; checks/<name>).
Params: prepare_refer.min_word_count, .max_tokens, datasets.<item>.{split_by, refer_dataset, image_dir}.
"""
from __future__ import annotations

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.data.prepare import prepare_refer
from refexp.paths import Paths
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    section = cfg.prepare_refer
    tuples, vocab, metrics = prepare_refer(paths.raw(item), item, cfg.dataset(item), section.min_word_count,
                                           section.max_tokens, paths.root)
    write_parquet(tuples, paths.tuples(item))
    vocab.save(paths.vocab(item))
    write_json(paths.metrics("prepare_refer", item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
