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
