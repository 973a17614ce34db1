"""Chance level and constant-box baseline against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from refexp.metrics import boxes as bm
from refexp.metrics.chance import (chance_p_at_1, chance_p_at_1_per_query, constant_box_accuracy,
                                   constant_box_predictions, mean_normalised_box, normalised_boxes)


def frame(rows):
    return pd.DataFrame(rows, columns=["image_id", "region_id", "x1", "y1", "x2", "y2", "image_width", "image_height"])


def test_chance_by_hand():
    # Image a: three boxes. r1 = [0..9]^2 and r2 = [0..9]x[0..4] overlap by exactly 0.5 (counted
    # correct); r3 is far away. Image b: one box, so any pick is right.
    t = frame([
        ("a", "r1", 0, 0, 9, 9, 100, 100),
        ("a", "r1", 0, 0, 9, 9, 100, 100),  # a second expression of r1: a second query, same boxes
        ("a", "r2", 0, 0, 9, 4, 100, 100),
        ("a", "r3", 50, 50, 59, 59, 100, 100),
        ("b", "s1", 5, 5, 20, 20, 40, 40),
    ])
    # r1: correct picks r1, r2 -> 2/3; r2: r1, r2 -> 2/3; r3: itself -> 1/3; s1: 1.
    assert chance_p_at_1_per_query(t) == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1 / 3, 1.0])
    assert chance_p_at_1(t) == pytest.approx((2 / 3 * 3 + 1 / 3 + 1) / 5)


def test_chance_equals_generic_uniform_pick_on_random_images():
    rng = np.random.default_rng(0)
    rows = []
    for img in range(30):
        for r in range(rng.integers(1, 6)):
            x1, y1 = rng.integers(0, 40, 2)
            w, h = rng.integers(1, 30, 2)
            for _ in range(rng.integers(1, 3)):
                rows.append((f"i{img}", f"i{img}_{r}", x1, y1, x1 + w - 1, y1 + h - 1, 80, 80))
    t = frame(rows)
    candidates = [t.loc[t.image_id == i].drop_duplicates("region_id")[["x1", "y1", "x2", "y2"]].to_numpy()
                  for i in t.image_id]
    expected = bm.chance_at_1(candidates, t[["x1", "y1", "x2", "y2"]].to_numpy())
    assert chance_p_at_1(t) == pytest.approx(expected, abs=1e-12)


def test_constant_box_by_hand():
    # Train: normalised boxes (0, 0, 0.5, 0.5) and (0.5, 0.5, 0.5, 0.5) -> mean (0.25, 0.25, 0.5, 0.5).
    train = frame([("a", "r1", 0, 0, 49, 49, 100, 100), ("b", "r2", 100, 50, 199, 99, 200, 100)])
    assert normalised_boxes(train).tolist() == [[0, 0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
    mean = mean_normalised_box(train)
    assert mean.tolist() == [0.25, 0.25, 0.5, 0.5]
    # Mapped to a 40x20 image: x1 = 10, y1 = 5, w = 20, h = 10 -> [10, 5, 29, 14] (inclusive).
    test = frame([
        ("c", "q1", 10, 5, 29, 14, 40, 20),  # exactly the mapped box: IoU 1
        ("c", "q2", 10, 5, 29, 9, 40, 20),  # half of it: IoU 0.5, correct at the threshold
        ("c", "q3", 10, 5, 29, 8, 40, 20),  # 4 of 10 rows: IoU 0.4, wrong
        ("d", "q4", 0, 0, 3, 3, 8, 8),  # mapped [2, 2, 5, 5]: overlap 2x2 = 4, union 28 -> wrong
    ])
    assert constant_box_predictions(mean, test)[0].tolist() == [10, 5, 29, 14]
    assert constant_box_predictions(mean, test)[3].tolist() == [2, 2, 5, 5]
    assert constant_box_accuracy(train, test) == pytest.approx(0.5)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks columns"):
        chance_p_at_1(pd.DataFrame({"image_id": ["a"]}))
    with pytest.raises(ValueError, match="non-positive size"):
        normalised_boxes(frame([("z", "r", 0, 0, 1, 1, 0, 10)]))
