"""build_region_benchmark: Visual Genome regions -> the expressional-region-retrieval benchmark.

Inputs: data/raw/<item>/{region_descriptions.json, image_data.json[, region_graphs.json]} (VG layout,
  real, sample or synthetic).
Outputs: data/build_region_benchmark/<item>/{regions,queries,pairs,corpus}.parquet (corpus: every filtered
  region of the images with a split, the retrieval corpus),
  reports/metrics/build_region_benchmark/<item>.json (every filter's counts, skips, split sizes).
Params: build_region_benchmark.* (filters, thresholds, direction rule, splits, METEOR JVMs, dask), run.seed.
"""
from __future__ import annotations

from refexp.artifacts import atomic_path, write_json
from refexp.config import Config
from refexp.data.skips import DataError, SkipCounter
from refexp.data.visual_genome import find_file, load_images, load_region_graph_counts, load_regions
from refexp.mining.benchmark import build
from refexp.mining.cluster import dask_client
from refexp.paths import Paths
from refexp.text.meteor import MeteorPool
from stages._cli import stage_main


def run(cfg: Config, item: str) -> dict:
    paths, p = Paths.from_config(cfg), cfg.build_region_benchmark
    raw = paths.raw(item)
    files = {n: find_file(raw, n) for n in ("region_descriptions.json", "image_data.json", "region_graphs.json")}
    for name in ("region_descriptions.json", "image_data.json"):
        if files[name] is None:
            raise DataError(raw / name, "missing (run fetch_data for this dataset)")
    skips, image_skips, graph_skips = SkipCounter(), SkipCounter(), SkipCounter()
    regions = load_regions(files["region_descriptions.json"], skips)
    images = load_images(files["image_data.json"], image_skips)
    graphs = (load_region_graph_counts(files["region_graphs.json"], graph_skips) if files["region_graphs.json"]
              else None)
    with dask_client(p.dask) as client, MeteorPool(p.meteor_jvms, p.meteor_batch_size) as meteor:
        tables, metrics = build(
            regions, images, graphs, dataset=item, raw_dir=raw.relative_to(paths.root), source=str(files["region_descriptions.json"]),
            skips=skips, seed=cfg.run.seed, area_min=p.area_min, area_max=p.area_max, multi_object=p.multi_object,
            iou_dedup=p.iou_dedup, bleu_threshold=p.bleu_threshold, meteor_threshold=p.meteor_threshold,
            direction_rule=p.direction_rule, val_fraction=p.val_fraction, test_fraction=p.test_fraction,
            meteor=meteor, n_blocks=p.dask.join_blocks, client=client)
        metrics["mining/meteor_jvm_restarts"] = meteor.stats["restarts"]
    metrics.update(image_skips.as_metrics("skipped_images/"))
    metrics.update(graph_skips.as_metrics("skipped_graphs/"))
    metrics.update({f"input/{unit}": n for unit, n in (image_skips.inputs + graph_skips.inputs).items()})
    with atomic_path(paths.stage_dir("build_region_benchmark", item)) as tmp:
        tmp.mkdir(parents=True)
        for name in ("regions", "queries", "pairs", "corpus"):
            getattr(tables, name).to_parquet(tmp / f"{name}.parquet", index=False)
    write_json(paths.metrics("build_region_benchmark", item), metrics)
    return metrics


def main() -> None:
    stage_main(run)


if __name__ == "__main__":
    main()
