"""propose_masks: segmentation proposals for every image of text_objseg.dataset (refexp.data.mask_proposals:
graph-based segments and their hierarchical merges, the substitute for MCG), read by the classifier over
segmentation proposals (a Table 1 baseline of the segmentation paper).

Inputs: data/prepare_referit/<text_objseg.dataset>/tuples.parquet and its images.
Outputs: data/propose_masks/<text_objseg.dataset>/proposals.parquet (image_id, rank, mask_rle at the image's
         size, x1, y1, x2, y2), reports/metrics/propose_masks/<text_objseg.dataset>.json.
Params: text_objseg.dataset, text_objseg.mask_proposals.
"""
from __future__ import annotations

from refexp.artifacts import write_json, write_parquet
from refexp.config import Config
from refexp.paths import Paths
from refexp.training import text_objseg_baselines
from stages._cli import stage_main


def run(cfg: Config) -> dict:
    paths = Paths.from_config(cfg)
    dataset = cfg.text_objseg.dataset
    table, metrics = text_objseg_baselines.mask_proposal_table(cfg, paths)
    write_parquet(table, text_objseg_baselines.mask_proposals_path(paths, dataset))
    write_json(paths.metrics(text_objseg_baselines.MASK_STAGE, dataset), metrics)
    return metrics


def main() -> None:
    stage_main(run, takes_item=False)


if __name__ == "__main__":
    main()
