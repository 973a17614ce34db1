"""`build` on a hand-made Visual Genome: the corpus holds every filtered region of the split images."""
from __future__ import annotations

import pandas as pd

from refexp.data.skips import SkipCounter
from refexp.mining.benchmark import CORPUS_COLUMNS, build

HORSE = "a man riding a horse on the beach"


def _regions():
    rows = [
        # image 1: r1 pairs with r6 (same phrase, image 2); r2-r4 fall to the filters; r5 survives alone
        (1, 1, HORSE, 10, 10, 60, 60),
        (1, 2, "a bag", 10, 10, 50, 50),                    # no relationship: several-objects filter
        (1, 3, HORSE, 0, 0, 5, 5),                          # 25 px: area filter
        (1, 4, HORSE, 11, 11, 59, 59),                      # IoU 0.97 with r1, smaller: de-duplicated
        (1, 5, "a dog sleeping on a sofa", 40, 0, 60, 40),
        # image 2: r6 (r1's pair), r7 alone
        (2, 6, HORSE, 0, 0, 50, 50),
        (2, 7, "a cat sitting on a chair", 50, 50, 50, 50),
        # image 3: nothing pairs, so it has no split and is in no corpus
        (3, 8, "a woman holding an umbrella", 0, 0, 50, 50),
    ]
    return pd.DataFrame(rows, columns=["image_id", "region_id", "phrase", "x", "y", "width", "height"])


def test_corpus_holds_filtered_regions_of_split_images(meteor_pool):
    images = pd.DataFrame({"image_id": [1, 2, 3], "width": [100] * 3, "height": [100] * 3,
                           "url": [f"x/VG_100K/{i}.jpg" for i in (1, 2, 3)]})
    tables, m = build(_regions(), images, None, dataset="vg", raw_dir="data/raw/vg", source="rd.json",
                      skips=SkipCounter(), seed=0, area_min=0.1, area_max=0.9, multi_object="graph_or_rule",
                      iou_dedup=0.9, bleu_threshold=0.7, meteor_threshold=0.6, direction_rule="both",
                      val_fraction=0.0, test_fraction=0.0, meteor=meteor_pool)
    corpus, regions = tables.corpus, tables.regions
    assert list(corpus.columns) == CORPUS_COLUMNS
    assert corpus["region_id"].tolist() == ["1", "5", "6", "7"]  # r2-r4 filtered, r8's image has no split
    by_id = corpus.set_index("region_id")
    assert by_id.loc[["5", "7"], "set_id"].tolist() == [-1, -1]
    assert by_id.loc[["5", "7"], "role"].tolist() == ["none", "none"]
    assert sorted(by_id.loc[["1", "6"], "role"]) == ["query", "target"]
    assert by_id.loc["1", "set_id"] == by_id.loc["6", "set_id"] == 0
    assert set(corpus["split"]) == {"train"}
    # inclusive pixel boxes and the image files, as regions.parquet has them
    assert by_id.loc["5", ["x1", "y1", "x2", "y2"]].tolist() == [40, 0, 99, 39]
    assert by_id.loc["6", "image_path"] == "data/raw/vg/VG_100K/2.jpg"
    # set members: the same rows as regions.parquet
    members = corpus[corpus["set_id"] >= 0][list(regions.columns)].sort_values("region_id").reset_index(drop=True)
    assert members.equals(regions.sort_values("region_id").reset_index(drop=True))
    assert (m["train/corpus_regions"], m["train/corpus_images"], m["train/regions"], m["train/queries"]) == (4, 2, 2, 1)
    assert m["test/corpus_regions"] == m["val/corpus_regions"] == 0
