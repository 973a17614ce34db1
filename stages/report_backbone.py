"""report_backbone: reports/backbone.md, the pretrained `tiny` backbone's own accuracy on held-out images.

Inputs: reports/metrics/pretrain_backbone/<backbone>.json, reports/plots/pretrain_backbone/<backbone>.csv,
        models/backbone/<backbone>/checkpoint.pt (predictions figure), the COCO images it shows.
Outputs: reports/backbone.md, reports/figures/backbone/*.png.
Params: datasets, training, pretrain_backbone.
"""
from __future__ import annotations

from refexp.config import Config
from refexp.artifacts import keep_last_good
from refexp.paths import Paths
from refexp.reporting.backbone import build_backbone_report
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    # A failed or killed rendering keeps the last good report (the outputs persist in dvc.yaml).
    with keep_last_good(paths.report("backbone"), paths.figures("backbone")):
        return build_backbone_report(cfg, paths)


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
