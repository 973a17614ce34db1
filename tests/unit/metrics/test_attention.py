import numpy as np
import pandas as pd
import pytest

from refexp.metrics.attention import attention_localisation, cells_in_box, target_size_groups


def test_cells_in_box_hand_computed():
    # 4 x 4 grid over a 40 x 40 image: cell centres at 5, 15, 25, 35 px.
    # Inclusive box x 10..19, y 0..9 spans [10, 20) x [0, 10): only the centre (15, 5), i.e. row 0 col 1.
    inside = cells_in_box(4, np.array([[10, 0, 19, 9]]), np.array([40]), np.array([40]))
    assert inside.shape == (1, 16)
    assert np.flatnonzero(inside[0]).tolist() == [1]
    # x2 = 14 stops the span at 15: the centre 15 is outside (half-open), so no cell at all.
    assert not cells_in_box(4, np.array([[10, 0, 14, 9]]), np.array([40]), np.array([40])).any()
    # The whole image holds every cell; a non-square image scales rows and columns separately.
    assert cells_in_box(4, np.array([[0, 0, 39, 19]]), np.array([40]), np.array([20])).all()
    # Rows: height 80 puts row centres at 10, 30, 50, 70; box y 20..39 holds row 1 only.
    rows = cells_in_box(4, np.array([[0, 20, 39, 39]]), np.array([40]), np.array([80])).reshape(4, 4)
    assert rows.any(1).tolist() == [False, True, False, False]


def test_attention_localisation_hand_computed():
    inside = np.array([[True, False, False, False], [True, False, False, False], [True, True, False, False]])
    attention = np.array([[3.0, 1.0, 0.0, 0.0],   # peak inside, 3/4 of the mass inside
                          [1.0, 2.0, 1.0, 0.0],   # peak outside, 1/4 inside
                          [0.0, 0.0, 0.0, 0.0]])  # dead map: no peak, no mass
    peak, mass = attention_localisation(attention, inside)
    assert peak.tolist() == [True, False, False]
    assert mass == pytest.approx([0.75, 0.25, 0.0])
    with pytest.raises(ValueError, match="differ"):
        attention_localisation(attention[:, :3], inside)


def test_target_size_groups():
    df = pd.DataFrame({"x1": [0, 0], "y1": [0, 0], "x2": [9, 99], "y2": [9, 9],
                       "image_width": [100, 100], "image_height": [100, 100]})
    # 100 px of 10,000 = 1% (small); 1,000 px = 10% (large, the threshold is inclusive).
    assert target_size_groups(df).tolist() == ["small", "large"]
