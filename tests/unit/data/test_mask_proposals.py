"""Mask proposals (the MCG substitute) and GrabCut from a box: they find the shapes of a drawn scene, are
deterministic, and every degenerate GrabCut case returns the box and says so."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from refexp.data import mask_proposals as mp

SIZE = 128
BAND_SPLIT = 60  # rows < 60: the top band ("sky"), rows >= 60: the bottom band ("water")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _best_iou(masks: np.ndarray, target: np.ndarray) -> float:
    inter = (masks & target).sum(axis=(1, 2))
    union = (masks | target).sum(axis=(1, 2))
    return float((inter / union).max())


def _scene() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 128x128 RGB scene: two background bands (the bottom one striped like water, so it only appears
    whole after merges), four flat shapes (one across the band edge), mild noise; and each part's true
    mask (bands exclude the shapes on them, as the world's stuff masks do)."""
    ys, xs = np.mgrid[:SIZE, :SIZE]
    shapes = {
        "square": (ys >= 15) & (ys < 40) & (xs >= 15) & (xs < 40),
        "disc": (ys - 30) ** 2 + (xs - 92) ** 2 <= 14 ** 2,
        "triangle": (ys >= 80) & (ys < 115) & (np.abs(xs - 35) <= (ys - 80) / 2),
        "bar": (ys >= 48) & (ys < 76) & (xs >= 70) & (xs < 82),  # straddles the band edge
    }
    colours = {"square": (200, 30, 30), "disc": (40, 160, 40), "triangle": (230, 210, 40), "bar": (240, 240, 240)}
    image = np.zeros((SIZE, SIZE, 3), dtype=np.float64)
    image[:BAND_SPLIT] = (135, 185, 235)
    image[BAND_SPLIT:] = (30, 70, 130)
    stripes = 14 * np.sign(np.sin(ys[BAND_SPLIT:] / 2.0 + xs[BAND_SPLIT:] / 9.0))  # 6-px-ish waves
    image[BAND_SPLIT:] += stripes[..., None] * np.array([0.5, 1.0, 1.0])
    for name, mask in shapes.items():
        image[mask] = colours[name]
    image += np.random.default_rng(0).normal(0, 3, image.shape)  # fixed noise: JPEG-like grain
    any_shape = np.logical_or.reduce(list(shapes.values()))
    truth = dict(shapes)
    truth["top_band"] = (ys < BAND_SPLIT) & ~any_shape
    truth["bottom_band"] = (ys >= BAND_SPLIT) & ~any_shape
    return np.clip(image, 0, 255).astype(np.uint8), truth


@pytest.fixture(scope="module")
def scene():
    return _scene()


@pytest.fixture(scope="module")
def scene_proposals(scene):
    image, _ = scene
    return mp.segment_proposals(image, count=100)


def test_proposals_find_every_shape_and_both_background_bands(scene, scene_proposals):
    _, truth = scene
    for name in ("square", "disc", "triangle", "bar"):
        assert _best_iou(scene_proposals, truth[name]) >= 0.8, name
    for name in ("top_band", "bottom_band"):
        assert _best_iou(scene_proposals, truth[name]) >= 0.7, name


def test_proposals_are_capped_nonempty_distinct_bool_masks(scene_proposals):
    masks = scene_proposals
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[1:] == (SIZE, SIZE)
    assert 1 <= len(masks) <= 100
    assert masks.any(axis=(1, 2)).all()
    flat = masks.reshape(len(masks), -1).astype(np.int64)
    inter = flat @ flat.T
    areas = flat.sum(axis=1)
    iou = inter / (areas[:, None] + areas[None, :] - inter)
    np.fill_diagonal(iou, 0)
    assert iou.max() < mp.DUPLICATE_IOU


def test_proposals_are_deterministic_and_a_smaller_count_is_a_prefix(scene, scene_proposals):
    image, _ = scene
    np.testing.assert_array_equal(mp.segment_proposals(image, count=100), scene_proposals)
    few = mp.segment_proposals(image, count=5)
    assert len(few) == 5
    np.testing.assert_array_equal(few, scene_proposals[:5])
    assert mp.segment_proposals(image, count=0).shape == (0, SIZE, SIZE)


def test_proposals_reject_a_non_rgb_uint8_image():
    with pytest.raises(ValueError):
        mp.segment_proposals(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        mp.segment_proposals(np.zeros((8, 8), dtype=np.uint8))


def test_proposals_on_a_real_referit_photo_fill_the_requested_count(shared_data):
    with Image.open(shared_data / "referit" / "images" / "38100.jpg") as photo:
        width, height = photo.size
        small = np.asarray(photo.convert("RGB").resize((128, round(128 * height / width)), Image.BILINEAR))
    masks = mp.segment_proposals(small, count=100)
    assert masks.shape == (100, *small.shape[:2]) and masks.dtype == bool
    assert masks.any(axis=(1, 2)).all()


# ---------------------------------------------------------------------------------------------- grabcut

def _circle_image() -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """64x64: a red disc (radius 15) on a grey-blue background; the disc and a box 4 px around it."""
    ys, xs = np.mgrid[:64, :64]
    disc = (ys - 32) ** 2 + (xs - 30) ** 2 <= 15 ** 2
    image = np.zeros((64, 64, 3), dtype=np.float64)
    image[:] = (70, 90, 120)
    image[disc] = (210, 40, 40)
    image += np.random.default_rng(1).normal(0, 4, image.shape)
    box = (30 - 15 - 4, 32 - 15 - 4, 30 + 15 + 4, 32 + 15 + 4)  # inclusive x1 y1 x2 y2
    return np.clip(image, 0, 255).astype(np.uint8), disc, box


def test_grabcut_segments_the_disc_better_than_its_box_and_reproducibly():
    image, disc, box = _circle_image()
    result = mp.grabcut_from_box(image, box, iterations=5)
    assert result.outcome == mp.GRABCUT and not result.fell_back
    assert result.mask.dtype == bool and result.mask.shape == disc.shape
    box_iou = _iou(mp.box_mask(64, 64, box), disc)  # ~0.5: pi r^2 / 38^2
    assert _iou(result.mask, disc) > max(box_iou + 0.2, 0.85)
    again = mp.grabcut_from_box(image, box, iterations=5)
    np.testing.assert_array_equal(again.mask, result.mask)


def test_grabcut_on_a_whole_image_box_runs_on_the_box_shrunk_by_a_pixel():
    image, _, _ = _circle_image()
    result = mp.grabcut_from_box(image, (0, 0, 63, 63), iterations=3)  # plain cv2.grabCut raises here
    assert result.outcome == mp.GRABCUT_SHRUNK_BOX and not result.fell_back
    assert not result.mask[0].any() and not result.mask[:, 0].any()  # the 1-px frame is background
    assert result.mask.any()


@pytest.mark.parametrize("box, outcome", [
    ((10, 10, 10, 40), mp.FALLBACK_SMALL_BOX),  # 1 px wide
    ((5, 62.6, 40, 70), mp.FALLBACK_SMALL_BOX),  # 1 px tall once clipped (and rounded)
    ((70, 70, 90, 90), mp.FALLBACK_EMPTY_BOX),  # wholly outside the image
])
def test_grabcut_degenerate_boxes_return_the_rectangle_and_say_so(box, outcome):
    image, _, _ = _circle_image()
    result = mp.grabcut_from_box(image, box, iterations=3)
    assert result.outcome == outcome and result.fell_back
    np.testing.assert_array_equal(result.mask, mp.box_mask(64, 64, box))


def test_grabcut_errors_and_empty_foregrounds_fall_back_to_the_rectangle(monkeypatch):
    image, _, box = _circle_image()

    def raising(*args):
        raise cv2.error("synthetic failure")

    monkeypatch.setattr(mp.cv2, "grabCut", raising)
    result = mp.grabcut_from_box(image, box, iterations=3)
    assert result.outcome == mp.FALLBACK_GRABCUT_ERROR and result.fell_back
    np.testing.assert_array_equal(result.mask, mp.box_mask(64, 64, box))

    def all_background(image, labels, *args):
        labels[:] = cv2.GC_BGD

    monkeypatch.setattr(mp.cv2, "grabCut", all_background)
    result = mp.grabcut_from_box(image, box, iterations=3)
    assert result.outcome == mp.FALLBACK_NO_FOREGROUND and result.fell_back
    np.testing.assert_array_equal(result.mask, mp.box_mask(64, 64, box))


# --------------------------------------------------------------------------------------------- box mask

def test_box_mask_is_the_inclusive_clipped_rectangle():
    mask = mp.box_mask(5, 6, (1, 2, 3, 4))  # x 1..3, y 2..4
    expected = np.zeros((5, 6), dtype=bool)
    expected[2:5, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    clipped = mp.box_mask(5, 6, (-3, -2, 10, 0.6))  # y 0..1 once 0.6 rounds to 1; every column
    expected = np.zeros((5, 6), dtype=bool)
    expected[0:2, :] = True
    np.testing.assert_array_equal(clipped, expected)
    assert mp.box_mask(5, 6, (0, 0, 0, 0)).sum() == 1  # a one-pixel box is that pixel
    assert not mp.box_mask(5, 6, (7, 1, 9, 3)).any()  # outside the image
