"""Torch datasets: the paper's x_spatial by hand, store coordinates, padding."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from refexp.data.torch_datasets import (BoxExpressionDataset, ImageError, ImageStore, collate_sequences,
                                        spatial_features, to_store_boxes)
from refexp.text.vocab import Vocab


def test_spatial_features_by_hand():
    # A 100 x 50 image; the box covers pixels x 0..49, y 25..49 -> continuous [0, 25, 50, 50).
    # Normalised to width/height 2 with the origin at the centre: x in [-1, 0], y in [0, 1].
    f = spatial_features(np.array([[0.0, 25.0, 50.0, 50.0]]), np.array([100.0]), np.array([50.0]))
    np.testing.assert_allclose(f[0], [-1, 0, 0, 1, -0.5, 0.5, 1, 1])
    whole = spatial_features(np.array([[0.0, 0.0, 100.0, 50.0]]), np.array([100.0]), np.array([50.0]))
    np.testing.assert_allclose(whole[0], [-1, -1, 1, 1, 0, 0, 2, 2])


def test_store_boxes_scale_to_the_store_size():
    b = to_store_boxes(np.array([[10.0, 20.0, 60.0, 40.0]]), np.array([200.0]), np.array([100.0]), 50)
    np.testing.assert_allclose(b[0], [2.5, 10, 15, 20])


def test_dataset_items_and_unknown_words(tmp_path):
    Image.new("RGB", (64, 32), (255, 0, 0)).save(tmp_path / "a.png")
    frame = pd.DataFrame({"image_path": ["a.png"], "image_width": [64], "image_height": [32], "x1": [0.0], "y1": [0.0],
                          "x2": [31.0], "y2": [31.0], "tokens": [["zebra", "red"]]})
    vocab = Vocab(("<pad>", "<bos>", "<eos>", "<unk>", "red"))
    store = ImageStore(["a.png"], tmp_path, 16)
    assert store.images.shape == (1, 3, 16, 16) and store.images[0, 0].min() == 255
    ds = BoxExpressionDataset(frame, vocab, store)
    item = ds[0]
    assert item["tokens"].tolist() == [3, 4]  # zebra -> <unk>
    np.testing.assert_allclose(item["box"].numpy(), [0, 0, 8, 16])
    batch = collate_sequences([item, {**item, "tokens": torch.tensor([3])}])
    assert batch["inputs"].tolist() == [[1, 3, 4], [1, 3, 0]]
    assert batch["targets"].tolist() == [[3, 4, 2], [3, 2, 0]]
    free = BoxExpressionDataset(frame, vocab, None)[0]
    assert "image" not in free and free["spatial"].shape == (8,)


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.png"):
        ImageStore(["bad.png"], tmp_path, 16)
