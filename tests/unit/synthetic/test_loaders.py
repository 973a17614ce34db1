"""The project's own loaders read the synthetic layouts: rows match the world's expressions."""
from __future__ import annotations

from collections import Counter

import numpy as np

from refexp.data import coco, referit
from refexp.data.skips import SkipCounter


def test_referit_loader_reads_every_expression_of_every_split(tiny_world):
    root = tiny_world.root / "referit"
    for split in ("train", "val", "test"):
        skips = SkipCounter()
        df = referit.load(root, split, skips=skips)
        expected = [(f"{i.image_id}_{e.region_index + 1}", e.text, e.kind)
                    for i in tiny_world.images if i.split == split for exprs in i.expressions for e in exprs]
        assert skips.total == 0
        assert len(df) == len(expected)
        assert Counter(zip(df["region_id"], df["expression"], df["kind"])) == Counter(expected)
    trainval = referit.load(root, "trainval")
    assert set(trainval["image_id"]) == {str(i.image_id) for i in tiny_world.images if i.split != "test"}


def test_referit_loader_boxes_and_masks_agree_with_the_scene(tiny_world):
    root = tiny_world.root / "referit"
    df = referit.load(root, "all").drop_duplicates("region_id")
    layout = referit.ReferItLayout.discover(root)
    by_id = {str(i.image_id): i for i in tiny_world.images}
    for row in df.itertuples():
        region = by_id[row.image_id].scene.regions[int(row.region_id.rsplit("_", 1)[1]) - 1]
        assert (row.x1, row.y1, row.x2, row.y2) == region.box
        assert np.array_equal(referit.read_mask(layout.mask_path(row.region_id)), region.mask)


def test_coco_loader_reads_every_instance_and_caption(tiny_world):
    ann = tiny_world.root / "coco" / "annotations"
    skips = SkipCounter()
    instances = sum(len(coco.load_instances(ann / f"instances_{s}2014.json", skips=skips)) for s in ("train", "val"))
    captions = sum(len(coco.load_captions(ann / f"captions_{s}2014.json", skips=skips)) for s in ("train", "val"))
    assert skips.total == 0
    assert instances == sum(len(i.scene.objects) for i in tiny_world.images)
    assert captions == sum(len(i.captions) for i in tiny_world.images)


def test_visual_genome_loaders_read_regions_images_and_region_graphs(tiny_world):
    from refexp.data import visual_genome
    from refexp.mining.regions import multi_object_filter

    root = tiny_world.root / "visual_genome"
    skips = SkipCounter()
    regions = visual_genome.load_regions(root / "region_descriptions.json", skips)
    images = visual_genome.load_images(root / "image_data.json", skips)
    graphs = visual_genome.load_region_graph_counts(root / "region_graphs.json")
    described = [d for i in tiny_world.images for d in i.region_descriptions]
    multi = [d for d in described if len(d.graph_objects) >= 2]
    assert skips.total == 0
    assert len(regions) == len(described) and len(graphs) == len(multi) > 0
    assert regions["phrase"].tolist() == [d.phrase for d in described]
    assert images["image_id"].tolist() == [i.image_id for i in tiny_world.images]
    assert graphs["n_objects"].tolist() == [len(d.graph_objects) for d in multi]
    assert graphs["n_relationships"].tolist() == [len(d.relationships) for d in multi]
    keep, how = multi_object_filter(regions, graphs, "graph_or_rule")
    assert how == {"by_graph": len(multi), "by_rule": len(described) - len(multi)}
    kinds = [d.kind for d in described]
    assert {k for k, kept in zip(kinds, keep) if kept} <= {"pair", "object_stuff", "triple"}
    assert all(kept for k, kept in zip(kinds, keep) if k in ("pair", "object_stuff"))
