"""report_vision_text_only: reports/vision_text_only.md, the vision-only/text-only paper's Tables 1-3 beside
ours, the learned alpha and the GloVe vocabulary's OOV words, the ordering claims with intervals resampled
by image, the novel-word subset, Fig. 4-like examples, training curves and cost, and the seed study's word.

Inputs: reports/metrics/{prepare_refer,train_vision_text_only_lowres,train_vision_text_only_highres,
        train_category_fcn,train_expression_classifier,train_vision_text_only_full,evaluate_vision_text_only}/,
        reports/plots/train_vision_text_only_{lowres,highres,full}/, data/evaluate_vision_text_only/<variant>/
        queries.parquet, data/evaluate_vision_text_only_fused/<dataset>/{category,full}.parquet, the trained
        full models (for the example figures) and reports/metrics/seed_study.json where it exists.
Outputs: reports/vision_text_only.md, reports/figures/vision_text_only/.
Params: run.seed, datasets, training, pretrain_backbone, text_objseg, vision_text_only, seed_study.models.
"""
from __future__ import annotations

from refexp.artifacts import keep_last_good
from refexp.config import Config
from refexp.paths import Paths
from refexp.reporting.vision_text_only import REPORT, build_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    # A failed or killed rendering keeps the last good report (the outputs persist in dvc.yaml).
    with keep_last_good(paths.report(REPORT), paths.figures(REPORT)):
        return build_report(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
