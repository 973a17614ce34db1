"""Table 1's baselines (refexp.training.text_objseg_baselines): the per-word FCN's words, the proposals'
overlaps and targets, and the box rows' predictions."""
import numpy as np
import pandas as pd
import pytest
import torch
from pycocotools import mask as mask_utils

from refexp.data.coco import encode_mask
from refexp.training.text_objseg_baselines import (
    ProposalSet,
    _boxes_iou,
    box_predictions,
    frequent_words,
    proposal_targets,
    word_indicators,
)

# ---------------------------------------------------------------- the per-word FCN's words

_TOKENS = [["the", "red", "car"], ["red", "car", "the"], ["a", "blue", "car"], ["blue"], ["the", "the", "van"]]


def test_frequent_words_by_count_then_word_without_stop_words():
    # counts without stop words: car 3, blue 2, red 2, van 1 (the 4 and a 1 are stop words)
    assert frequent_words(_TOKENS, 10, ["the", "a"]) == ["car", "blue", "red", "van"]
    assert frequent_words(_TOKENS, 2, ["the", "a"]) == ["car", "blue"]  # the tie blue/red goes to the word
    assert frequent_words(_TOKENS, 1, []) == ["the"]  # counted every time it occurs
    assert frequent_words(_TOKENS, 3, []) == ["the", "car", "blue"]
    assert frequent_words(_TOKENS, 0, []) == []
    assert frequent_words([["the", "a"]], 5, ["the", "a"]) == []


def test_frequent_words_accept_a_series_of_token_arrays():
    series = pd.Series([np.array(t, dtype=object) for t in _TOKENS])  # as read from parquet
    assert frequent_words(series, 3, ["the", "a"]) == ["car", "blue", "red"]


def test_word_indicators_by_hand():
    words = ["car", "blue", "red"]
    out = word_indicators([["the", "red", "car"], ["blue", "blue"], ["van"], []], words)
    assert out.dtype == torch.bool and out.shape == (4, 3)
    assert out.tolist() == [[True, False, True], [False, True, False], [False, False, False], [False, False, False]]
    assert word_indicators([["car"]], []).shape == (1, 0)


# ---------------------------------------------------------------- proposals' overlaps


def test_boxes_iou_by_hand_on_inclusive_boxes():
    # two 10 x 10 inclusive boxes 5 px apart: 5 x 10 = 50 shared of 150
    iou = _boxes_iou(np.array([[0, 0, 9, 9], [5, 0, 14, 9], [0, 0, 9, 9], [20, 20, 29, 29], [9, 9, 9, 9]]),
                     np.array([5, 0, 14, 9]))
    # the last, a single pixel (9, 9) inside the box: 1 / 100
    np.testing.assert_allclose(iou, [50 / 150, 1.0, 50 / 150, 0.0, 1 / 100])
    # a one-pixel box is one pixel, not zero area: its IoU with itself is 1, with a 2 x 2 box around it 1/4
    np.testing.assert_allclose(_boxes_iou(np.array([[3, 3, 3, 3]]), np.array([3, 3, 4, 4])), [0.25])
    assert _boxes_iou(np.zeros((0, 4)), np.array([0, 0, 1, 1])).shape == (0,)


def test_boxes_iou_equals_torchvision_on_converted_boxes():
    from torchvision.ops import box_iou

    rng = np.random.default_rng(0)
    xy = rng.integers(0, 50, (40, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 30, (40, 2))], 1).astype(np.float64)
    box = np.array([10.0, 12.0, 40.0, 33.0])
    exclusive = torch.from_numpy(boxes.copy())
    exclusive[:, 2:] += 1
    reference = box_iou(exclusive, torch.tensor([[10.0, 12.0, 41.0, 34.0]], dtype=torch.float64))[:, 0].numpy()
    np.testing.assert_allclose(_boxes_iou(boxes, box), reference, atol=1e-12)
    assert (reference > 0).sum() > 5  # the case has overlaps
    np.testing.assert_array_equal(boxes[:, 2:] >= boxes[:, :2], True)  # the inputs are not modified in place
    np.testing.assert_allclose(box, [10.0, 12.0, 40.0, 33.0])


# ---------------------------------------------------------------- proposal targets


def _rows(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records)


def _box_props(boxes: list[np.ndarray]) -> ProposalSet:
    k_max = max(len(b) for b in boxes)
    valid = torch.zeros(len(boxes), k_max, dtype=torch.bool)
    for i, b in enumerate(boxes):
        valid[i, :len(b)] = True
    return ProposalSet(torch.zeros(len(boxes), k_max, 3), valid, boxes, None)


def test_grounder_targets_are_the_best_overlapping_box():
    props = _box_props([np.array([[0, 0, 9, 9], [5, 0, 14, 9], [0, 0, 29, 29]], dtype=np.float64),
                        np.array([[50, 50, 59, 59]], dtype=np.float64),
                        np.zeros((0, 4))])
    rows = _rows([{"x1": 5, "y1": 0, "x2": 14, "y2": 9},  # image 0: exactly proposal 1
                  {"x1": 0, "y1": 0, "x2": 27, "y2": 27},  # image 0: proposal 2 (784 / 900)
                  {"x1": 0, "y1": 0, "x2": 9, "y2": 9},  # image 1: its only box, no overlap
                  {"x1": 0, "y1": 0, "x2": 9, "y2": 9}])  # image 2: no proposals at all
    targets, below = proposal_targets(rows, torch.tensor([0, 0, 1, 2]), props, "grounder", positive_iou=0.5)
    assert targets.dtype == torch.long
    assert targets.tolist() == [1, 2, 0, 0]
    assert below == pytest.approx(2 / 4)  # rows 2 and 3: best IoU 0


def _rle(mask: np.ndarray) -> dict:
    return {"size": list(mask.shape), "counts": encode_mask(mask).encode()}


def _rect(h: int, w: int, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_classifier_targets_are_every_proposal_over_the_mask_iou():
    h, w = 10, 20
    truth = _rect(h, w, 0, 10, 0, 10)  # the left half: 100 pixels
    proposals = [[_rect(h, w, 0, 10, 0, 10),  # IoU 1
                  _rect(h, w, 0, 10, 0, 8),  # 80 / 100
                  _rect(h, w, 0, 10, 5, 15),  # 50 / 150
                  _rect(h, w, 0, 10, 10, 20)],  # 0
                 [_rect(h, w, 0, 5, 0, 20)]]  # image 1, one proposal (the top half): 50 / 150
    props = ProposalSet(torch.zeros(2, 4, 3), torch.tensor([[True] * 4, [True, False, False, False]]),
                        [np.zeros((len(p), 4)) for p in proposals], [[_rle(m) for m in p] for p in proposals])
    row = {"image_height": h, "image_width": w, "mask_rle": encode_mask(truth)}
    rows = _rows([row, row, {**row, "mask_rle": encode_mask(_rect(h, w, 0, 10, 12, 20))}])
    targets, below = proposal_targets(rows, torch.tensor([0, 1, 0]), props, "proposal_classifier", positive_iou=0.6)
    assert targets.shape == (3, 4) and targets.dtype == torch.float32
    assert targets.tolist() == [[1, 1, 0, 0],
                                [0, 0, 0, 0],  # 1/3 < 0.6; the padding slots stay 0
                                [0, 0, 0, 1]]  # the third truth (80 px in 12-19) is within proposal 3: 80 / 100
    assert below == pytest.approx(1 / 3)  # row 1's best is 1/3
    # the IoU's are pycocotools'
    ious = np.asarray(mask_utils.iou(props.rles[0], [_rle(truth)], [0])).reshape(-1)
    np.testing.assert_allclose(ious, [1.0, 0.8, 50 / 150, 0.0])


# ---------------------------------------------------------------- a box row's rectangle


def test_bbox_predictions_are_the_rectangles_and_count_rows_without_a_box():
    rows = _rows([{"image_height": 6, "image_width": 8, "image_path": "a.jpg"}] * 3
                 + [{"image_height": 4, "image_width": 5, "image_path": "b.jpg"}])
    box = np.array([1.0, 2.0, 3.0, 4.0])
    preds, counts = box_predictions(None, None, rows, [box, None, box.copy(), np.array([0.0, 0.0, 10.0, 1.0])], "bbox")
    expected = np.zeros((6, 8), bool)
    expected[2:5, 1:4] = True  # inclusive: rows 2-4, columns 1-3
    np.testing.assert_array_equal(preds[0], expected)
    np.testing.assert_array_equal(preds[1], np.zeros((6, 8), bool))  # no box: nothing predicted
    np.testing.assert_array_equal(preds[2], expected)
    clipped = np.zeros((4, 5), bool)
    clipped[0:2, :] = True  # clipped to the image
    np.testing.assert_array_equal(preds[3], clipped)
    assert counts == {"no_box": 1, "distinct_boxes": 2}  # the repeated box of a.jpg computed once


def test_grabcut_predictions_in_threads_equal_grabcut_one_box_after_another(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from refexp.data.mask_proposals import grabcut_from_box

    rng = np.random.default_rng(0)
    paths, boxes, images = [], [], {}
    for i in range(6):  # noisy scenes with a bright square: GrabCut's k-means init matters
        image = rng.integers(0, 120, (48, 64, 3), dtype=np.uint8)
        image[10 + i:30 + i, 12:40] = rng.integers(150, 255, (20, 28, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        images[f"{i}.png"] = image
        for box in ([8.0, 6 + i, 44.0, 34 + i], [10.0, 8.0, 42.0, 40.0]):
            paths.append(f"{i}.png")
            boxes.append(np.array(box))
    rows = _rows([{"image_height": 48, "image_width": 64, "image_path": p} for p in paths])
    cfg = SimpleNamespace(text_objseg=SimpleNamespace(grabcut_iterations=3))
    preds, counts = box_predictions(cfg, SimpleNamespace(root=tmp_path), rows, boxes, "grabcut")
    serial = [grabcut_from_box(images[p], b, 3) for p, b in zip(paths, boxes)]
    for got, want in zip(preds, serial):
        np.testing.assert_array_equal(got, want.mask)
    assert counts["distinct_boxes"] == 12
    assert sum(v for k, v in counts.items() if k.startswith("grabcut/")) == 12
