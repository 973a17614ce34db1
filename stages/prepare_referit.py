"""prepare_referit: ReferIt-format raw layout -> common-schema tuples and a vocabulary: SCRC's
released vocab/vocabulary_scrc.txt when the layout has it (prepare_referit.vocabulary: released),
else the train split's words.

Inputs: data/raw/<item>/ (ReferIt layout, real or synthetic).
Outputs: data/prepare_referit/<item>/{tuples.parquet, vocab.txt}, reports/metrics/prepare_referit/<item>.json
  (with input/expressions = the tuples + every skipped/<reason>; kept_with_defect/<reason>; checks/<name>).
Params: prepare_referit.min_word_count, .max_tokens, .vocabulary, datasets.
"""
from __future__ import annotations

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.data.prepare import prepare_referit
from refexp.paths import Paths
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths = Paths.from_config(cfg)
    section = cfg.prepare_referit
    tuples, vocab, metrics = prepare_referit(paths.raw(item), item, section.min_word_count,
                                             section.max_tokens, paths.root, section.vocabulary)
    write_parquet(tuples, paths.tuples(item))
    vocab.save(paths.vocab(item))
    write_json(paths.metrics("prepare_referit", item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
