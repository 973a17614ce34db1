import numpy as np
import pytest

from refexp.data.letterbox import Letterbox, any_positive_downsample


@pytest.mark.parametrize("w, h", [(100, 50), (37, 91), (64, 64), (1, 7)])
def test_pad_then_restore_round_trip(w, h):
    box = Letterbox.fit(w, h, 64, 64)
    assert max(box.resized_w, box.resized_h) == 64 and 0 <= box.pad_x <= 32 and 0 <= box.pad_y <= 32
    rng = np.random.default_rng(0)
    mask = np.zeros((h, w), bool)
    mask[h // 4: 3 * h // 4 + 1, w // 4: 3 * w // 4 + 1] = True
    padded = box.mask(mask)
    assert padded.shape == (64, 64) and padded.dtype == bool
    # The padding is background; the image sits centred.
    assert not padded[:, :box.pad_x].any() and not padded[:box.pad_y].any()
    # Scores that are +1 on the padded mask and -1 elsewhere come back as the original mask.
    restored = box.restore(np.where(padded, 1.0, -1.0)) > 0
    assert restored.shape == (h, w)
    assert (restored == mask).mean() > 0.9
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert box.image(image).shape == (64, 64, 3)


def test_restore_of_an_upscaled_constant_is_exact():
    box = Letterbox.fit(200, 100, 64, 64)  # scale 0.32: 64 x 32, padded 16 rows above and below
    assert (box.resized_w, box.resized_h, box.pad_x, box.pad_y) == (64, 32, 0, 16)
    scores = np.full((64, 64), -5.0, np.float32)
    scores[16:48] = 2.5
    assert np.allclose(box.restore(scores), 2.5)


def test_wrong_sizes_are_errors():
    box = Letterbox.fit(10, 20, 32, 32)
    with pytest.raises(ValueError, match="fitted to 10x20"):
        box.mask(np.zeros((10, 20), bool))
    with pytest.raises(ValueError, match="the input is"):
        box.restore(np.zeros((16, 16)))


def test_any_positive_downsample():
    labels = np.zeros((8, 8), bool)
    labels[0, 0] = True  # one pixel makes its whole 4x4 cell positive
    labels[5:8, 6] = True
    assert any_positive_downsample(labels, 4).tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match="multiple of the stride"):
        any_positive_downsample(np.zeros((6, 8), bool), 4)


# ---------------------------------------------------------------- Letterbox.boxes


def _wide() -> Letterbox:
    box = Letterbox.fit(200, 100, 128, 128)  # scale 0.64: 128 x 64, padded 32 rows above and below
    assert (box.resized_w, box.resized_h, box.pad_x, box.pad_y) == (128, 64, 0, 32)
    return box


def test_the_whole_image_box_maps_to_the_resized_region():
    box = _wide()
    out = box.boxes(np.array([[0, 0, 199, 99]]))
    assert out.shape == (1, 4) and out.dtype == np.float32
    expected = [box.pad_x, box.pad_y, box.pad_x + box.resized_w - 1, box.pad_y + box.resized_h - 1]
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
    assert expected == [0, 32, 127, 95]
    # a tall image: the padding is on the left and right
    tall = Letterbox.fit(50, 100, 64, 64)  # scale 0.64: 32 x 64, padded 16 columns each side
    assert (tall.resized_w, tall.resized_h, tall.pad_x, tall.pad_y) == (32, 64, 16, 0)
    np.testing.assert_allclose(tall.boxes([[0, 0, 49, 99]])[0], [16, 0, 47, 63], atol=1e-5)


def test_an_interior_box_by_hand():
    box = _wide()
    # x: 50 * .64 = 32, (149 + 1) * .64 - 1 = 95; y: 25 * .64 + 32 = 48, (74 + 1) * .64 + 32 - 1 = 79
    # a one-pixel box: 10 * .64 = 6.4, 11 * .64 - 1 = 6.04 < x1, so x2 = x1 (never inverted)
    out = box.boxes(np.array([[50, 25, 149, 74], [10, 10, 10, 10]]))
    np.testing.assert_allclose(out, [[32, 48, 95, 79], [6.4, 38.4, 6.4, 38.4]], atol=1e-4)
    assert (out[:, 2] >= out[:, 0]).all() and (out[:, 3] >= out[:, 1]).all()
    # a flat list of 4 is one box; an empty array is no box
    np.testing.assert_allclose(box.boxes([50, 25, 149, 74]), out[:1], atol=1e-5)
    assert box.boxes(np.zeros((0, 4))).shape == (0, 4)


@pytest.mark.parametrize("w, h, size", [(200, 100, 128), (37, 91, 64), (300, 211, 96), (64, 64, 64)])
def test_boxes_agree_with_the_letterboxed_mask_within_a_pixel(w, h, size):
    box = Letterbox.fit(w, h, size, size)
    rng = np.random.default_rng(w * h)
    for _ in range(20):
        x1, x2 = np.sort(rng.integers(0, w, 2))
        y1, y2 = np.sort(rng.integers(0, h, 2))
        mask = np.zeros((h, w), bool)
        mask[y1:y2 + 1, x1:x2 + 1] = True
        mapped = box.boxes([[x1, y1, x2, y2]])[0]
        boxed = box.mask(mask)
        if not boxed.any():  # a rectangle thinner than a resized pixel may vanish under nearest neighbour
            assert min(mapped[2] - mapped[0], mapped[3] - mapped[1]) < 1
            continue
        ys, xs = np.nonzero(boxed)
        np.testing.assert_allclose(mapped, [xs.min(), ys.min(), xs.max(), ys.max()], atol=1.0)
