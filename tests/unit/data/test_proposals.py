"""Proposals from a real method: selective search on real and synthetic images, its determinism, and
which method a layout's files are named as (never the ground truth)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from refexp.data import proposals, referit
from refexp.data.skips import DataError
from refexp.metrics.boxes import box_iou_np


def _real_image(shared_data, image_id: str) -> np.ndarray:
    return np.asarray(Image.open(shared_data / "referit" / "images" / f"{image_id}.jpg").convert("RGB"))


def _real_boxes(shared_data, image_id: str) -> np.ndarray:
    bbox = json.loads((shared_data / "referit" / "annotations" / "referit_bbox.json").read_text())
    return np.array([v for k, v in bbox.items() if k.rpartition("_")[0] == image_id], dtype=float)


def test_selective_search_on_a_real_referit_image(shared_data):
    image = _real_image(shared_data, "38100")
    boxes = proposals.selective_search(image, 100, seed=3)
    height, width = image.shape[:2]
    assert boxes.shape == (100, 4) and boxes.dtype == np.int64
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width - 1).all() and (boxes[:, 3] <= height - 1).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert len({tuple(b) for b in boxes}) == 100  # OpenCV drops duplicate rectangles
    # It finds the annotated regions: 38100's four regions each have a proposal at IoU >= 0.5.
    assert (box_iou_np(boxes, _real_boxes(shared_data, "38100")).max(axis=0) >= 0.5).all()


def test_selective_search_is_a_function_of_the_image_and_the_seed(shared_data):
    image = _real_image(shared_data, "40429")
    first = proposals.selective_search(image, 50, seed=7)
    proposals.selective_search(_real_image(shared_data, "38100"), 50, seed=1)  # rand() state moves on
    np.testing.assert_array_equal(proposals.selective_search(image, 50, seed=7), first)
    # The seed reorders OpenCV's ranking (level x rand()), not the set of boxes it finds.
    other = proposals.selective_search(image, 10_000, seed=8)
    assert {tuple(b) for b in proposals.selective_search(image, 10_000, seed=7)} == {tuple(b) for b in other}
    assert not np.array_equal(proposals.selective_search(image, 50, seed=8), first)
    assert proposals.image_seed("40429", 0) != proposals.image_seed("40429", 1)


def test_the_released_files_are_edgebox_and_a_record_names_computed_ones(shared_data, tmp_path):
    root = tmp_path / "referit"
    shutil.copytree(shared_data / "referit", root)
    table = pd.DataFrame({"image_id": ["40429", "38100"], "image_path": [None, None]})
    out, method = proposals.proposals_for_images(root, table, 100, 0)
    assert method == proposals.EDGEBOX
    np.testing.assert_array_equal(out["40429"], referit.load_proposals(root / "proposals" / "40429.txt"))
    assert out["38100"].shape == (0, 4)  # no file for it: no candidates (the metrics count it)
    (root / "annotations" / proposals.METHOD_FILE).write_text(json.dumps({"method": "my_method"}))
    assert proposals.proposals_for_images(root, table, 100, 0)[1] == "my_method"
    (root / "annotations" / proposals.METHOD_FILE).write_text("{not json")
    with pytest.raises(DataError, match=proposals.METHOD_FILE):
        proposals.proposals_for_images(root, table, 100, 0)


def test_without_proposal_files_selective_search_runs_on_the_images(shared_data, tmp_path):
    (tmp_path / "images").mkdir()
    shutil.copy(shared_data / "referit" / "images" / "38100.jpg", tmp_path / "images" / "38100.jpg")
    table = pd.DataFrame({"image_id": ["38100", "99"], "image_path": ["images/38100.jpg", None]})
    out, method = proposals.proposals_for_images(tmp_path / "no_layout", table, 20, 0, repo_root=tmp_path)
    assert method == proposals.SELECTIVE_SEARCH
    expected = proposals.selective_search(_real_image(shared_data, "38100"), 20, proposals.image_seed("38100", 0))
    np.testing.assert_array_equal(out["38100"], expected)
    assert out["99"].shape == (0, 4)
    image_free = proposals.proposals_for_images(tmp_path / "no_layout", table.iloc[1:], 20, 0)
    assert image_free[1] == proposals.NO_PROPOSALS


def test_an_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    table = pd.DataFrame({"image_id": ["1"], "image_path": ["bad.jpg"]})
    with pytest.raises(DataError, match="bad.jpg"):
        proposals.proposals_for_images(tmp_path / "none", table, 10, 0, repo_root=tmp_path)
