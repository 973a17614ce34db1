"""Frozen region features (refexp.training.region_features): roi_align against the map's own cells, boxes onto
the letterboxed input and back, bad boxes and unreadable images."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from refexp.data.letterbox import Letterbox
from refexp.data.skips import DataError
from refexp.training.region_features import (Corpus, backbone_maps, load_letterboxed, roi_features, to_input,
                                             to_original)


def corpus_frame(rows: list[dict]) -> pd.DataFrame:
    base = {"dataset": "vg", "image_width": 64, "image_height": 64, "expression": "a box", "split": "train",
            "set_id": -1, "role": "none"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_roi_align_of_whole_cells_is_those_cells():
    """stride 8 on a 64 x 64 image: a box covering cells x 2..4, y 1..3 gives exactly them at k = 3, and their
    2 x 2 means at k = 2 for a 4 x 4-cell box (aligned=True samples each cell at its centre)."""
    torch.manual_seed(0)
    maps = torch.randn(2, 5, 8, 8)
    box = Letterbox.fit(64, 64, 64, 64)
    three = torch.from_numpy(to_input(box, np.array([[16, 8, 39, 31]])))  # inclusive pixels 16..39, 8..31
    assert three.tolist() == [[16.0, 8.0, 40.0, 32.0]]
    four = torch.from_numpy(to_input(box, np.array([[0, 32, 31, 63]])))  # cells x 0..3, y 4..7
    out = roi_features(maps, [three, four], stride=8, k=3)
    assert out.shape == (2, 5, 3, 3)
    assert torch.allclose(out[0], maps[0, :, 1:4, 2:5], atol=1e-6)
    two = roi_features(maps, [torch.zeros(0, 4), four], stride=8, k=2)
    pooled = maps[1, :, 4:8, 0:4].reshape(5, 2, 2, 2, 2).mean(dim=(2, 4))  # (C, 2, 2) of 2 x 2-cell means
    assert two.shape == (1, 5, 2, 2) and torch.allclose(two[0], pooled, atol=1e-6)


def test_roi_align_through_a_letterbox():
    """A 128 x 64 image in a 64 x 64 input is halved and padded 16 rows above: its pixels 32..63 x 0..31 are
    the input's 16..31 x 16..31, i.e. cells 2..3 x 2..3."""
    maps = torch.arange(8 * 8, dtype=torch.float32).view(1, 1, 8, 8)
    box = Letterbox.fit(128, 64, 64, 64)
    assert (box.resized_w, box.resized_h, box.pad_x, box.pad_y) == (64, 32, 0, 16)
    boxes = torch.from_numpy(to_input(box, np.array([[32, 0, 63, 31]])))
    assert boxes.tolist() == [[16.0, 16.0, 32.0, 32.0]]
    assert torch.equal(roi_features(maps, [boxes], 8, 2)[0], maps[0, :, 2:4, 2:4])


@pytest.mark.parametrize("w, h", [(200, 100), (37, 91), (128, 128), (640, 480)])
def test_boxes_round_trip_through_the_letterbox(w, h):
    rng = np.random.default_rng(1)
    box = Letterbox.fit(w, h, 128, 128)
    # At least one input pixel wide (Letterbox.boxes keeps a narrower box's inclusive end at its start).
    least = int(np.ceil(max(w, h) / 128)) + 1
    x1, y1 = rng.uniform(0, w - least - 1, 50), rng.uniform(0, h - least - 1, 50)
    boxes = np.stack([x1, y1, rng.uniform(x1 + least, w - 1), rng.uniform(y1 + least, h - 1)], 1)
    back, kept = to_original(box, to_input(box, boxes))
    assert kept.all() and np.allclose(back, boxes, atol=1e-3)


def test_proposals_in_the_padding_are_dropped_and_the_rest_clipped():
    box = Letterbox.fit(128, 64, 64, 64)  # padding: input rows 0..15 and 48..63
    back, kept = to_original(box, np.array([[0.0, 0.0, 64.0, 10.0],  # wholly in the top padding
                                            [-4.0, 8.0, 70.0, 40.0]]))  # over the padding and past the edge
    assert kept.tolist() == [False, True]
    assert back[1].tolist() == [0.0, 0.0, 127.0, 47.0]  # rows 16..39 of the input: original 0..47


def test_bad_boxes_are_counted_skips():
    frame = corpus_frame([
        {"image_id": "1", "image_path": "a.jpg", "region_id": "ok", "x1": 0, "y1": 0, "x2": 63, "y2": 63},
        {"image_id": "1", "image_path": "a.jpg", "region_id": "flat", "x1": 10, "y1": 5, "x2": 9, "y2": 20},
        {"image_id": "2", "image_path": "b.jpg", "region_id": "out", "x1": 10, "y1": 5, "x2": 64, "y2": 20},
        {"image_id": "2", "image_path": "b.jpg", "region_id": "neg", "x1": -1, "y1": 5, "x2": 30, "y2": 20},
        {"image_id": "2", "image_path": "b.jpg", "region_id": "nan", "x1": np.nan, "y1": 5, "x2": 30, "y2": 20},
    ])
    corpus = Corpus.from_frame(frame)
    assert corpus.valid.tolist() == [True, False, False, False, False]
    assert corpus.skips.as_metrics() == {"skipped/box_outside_image": 2, "skipped/box_zero_area": 2}
    assert corpus.images["image_id"].tolist() == ["1", "2"] and corpus.image_of_row.tolist() == [0, 0, 1, 1, 1]
    assert corpus.rows_of(0).tolist() == [0] and corpus.rows_of(1, valid_only=False).tolist() == [2, 3, 4]


def test_a_corpus_missing_columns_or_with_inconsistent_images_is_an_error():
    frame = corpus_frame([{"image_id": "1", "image_path": "a.jpg", "region_id": "r",
                           "x1": 0, "y1": 0, "x2": 5, "y2": 5}])
    with pytest.raises(DataError, match=r"lacks columns \['role'\]"):
        Corpus.from_frame(frame.drop(columns="role"))
    two = pd.concat([frame, frame.assign(region_id="s", split="test")])
    with pytest.raises(DataError, match="disagree on image_path, size or split"):
        Corpus.from_frame(two)


def test_an_unreadable_image_names_the_file_and_a_resized_one_is_counted(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (32, 64), (200, 10, 10)).save(tmp_path / "small.jpg")
    frame = corpus_frame([
        {"image_id": "1", "image_path": "bad.jpg", "region_id": "a", "x1": 0, "y1": 0, "x2": 5, "y2": 5},
        {"image_id": "2", "image_path": "missing.jpg", "region_id": "b", "x1": 0, "y1": 0, "x2": 5, "y2": 5},
        {"image_id": "3", "image_path": "small.jpg", "region_id": "c", "x1": 0, "y1": 0, "x2": 5, "y2": 5},
    ])
    corpus = Corpus.from_frame(frame)
    for image, name in ((0, "bad.jpg"), (1, "missing.jpg")):
        with pytest.raises(DataError, match=f"{name}.*cannot read image"):
            load_letterboxed(corpus, image, tmp_path, 32)
    pixels = load_letterboxed(corpus, 2, tmp_path, 32)  # 32 x 64 on disk, 64 x 64 in the corpus
    assert pixels.shape == (32, 32, 3)
    assert corpus.defects.as_metrics("kept_with_defect/") == {"kept_with_defect/image_size_mismatch": 1}


def test_backbone_maps_do_not_depend_on_the_batch(tmp_path):
    from refexp.models.backbones import build_backbone

    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"image_id": str(i), "image_path": f"{i}.png", "image_width": 64, "image_height": 48,
                     "region_id": str(i), "x1": 0, "y1": 0, "x2": 10, "y2": 10})
    corpus = Corpus.from_frame(corpus_frame(rows))
    torch.manual_seed(0)
    net = build_backbone("tiny", False).eval()
    together = [m for _, m in backbone_maps(net, corpus, np.arange(3), tmp_path, 32, batch_size=3)]
    apart = [m for _, m in backbone_maps(net, corpus, np.arange(3), tmp_path, 32, batch_size=1)]
    assert together[0].shape == (3, 128, 4, 4) and len(apart) == 3
    assert torch.allclose(together[0], torch.cat(apart), atol=1e-5)
