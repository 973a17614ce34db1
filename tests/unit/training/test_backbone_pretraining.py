"""The embedded ImageNet stand-in: label maps from COCO masks, the held-out split, class weights, the
dense metrics by hand, and a backbone that learns (loss falls, beats the all-background baseline)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from refexp.config import PretrainBackboneConfig
from refexp.data.coco import encode_mask
from refexp.models.backbone_pretraining import DensePretrainer
from refexp.models.backbones import build_backbone
from refexp.training import backbone as recipe


def _instances(n_images: int = 6, size: int = 32) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Images with a red square (category 'a') top-left or a green one ('b') bottom-right."""
    rows, images, labels = [], np.zeros((n_images, size, size, 3), np.uint8), np.zeros((n_images, size, size), np.uint8)
    for i in range(n_images):
        mask = np.zeros((size, size), bool)
        if i % 2 == 0:
            mask[2:14, 2:14] = True
            images[i][mask] = (255, 0, 0)
            category, cid, label = "a", 1, 1
        else:
            mask[18:30, 18:30] = True
            images[i][mask] = (0, 255, 0)
            category, cid, label = "b", 3, 2  # COCO ids have gaps: 'b' is class 2 of background, a, b
        labels[i][mask] = label
        rows.append({"image_id": str(i), "image_path": f"img{i}.png", "image_width": size, "image_height": size,
                     "category": category, "category_id": cid, "mask_rle": encode_mask(mask),
                     "split": "train" if i < n_images - 2 else "val"})
    return pd.DataFrame(rows), images, labels


def test_label_maps_and_classes_from_the_masks():
    table, _, labels = _instances()
    names = recipe.class_names(table)
    assert names == ["background", "a", "b"]
    maps = recipe.label_maps(table, [f"img{i}.png" for i in range(6)], 32, names)
    np.testing.assert_array_equal(maps.numpy(), labels)
    half = recipe.label_maps(table, ["img1.png"], 16, names)  # nearest resize keeps labels
    assert set(half.unique().tolist()) == {0, 2} and int((half == 2).sum()) == 36


def test_held_out_images_come_from_train2014_only():
    table, _, _ = _instances(20)
    table.loc[table.index[-6:], "split"] = "val"
    train, held, val = recipe.split_images(table, 0.25, seed=0, max_images=None)
    assert len(held) == 4 and len(train) == 10 and len(val) == 6
    assert not set(train) & set(held) and not (set(train) | set(held)) & set(val)
    assert recipe.split_images(table, 0.25, seed=0, max_images=None) == (train, held, val)
    assert recipe.split_images(table, 0.25, seed=1, max_images=None)[1] != held
    assert len(recipe.split_images(table, 0.25, seed=0, max_images=3)[0]) == 3


def test_class_weights_by_hand():
    labels = torch.tensor([[0, 0, 0, 1]])  # background 3/4, class 1 1/4, class 2 absent
    w = recipe.class_weights(labels, 3, 0.5)
    # freq^-0.5 = (2/sqrt(3), 2, large), scaled so the pixel-weighted mean is 1.
    raw = np.array([(0.75) ** -0.5, 0.25 ** -0.5])
    expected = raw / ((raw * np.array([3, 1])).sum() / 4)
    np.testing.assert_allclose(w[:2].numpy(), expected, rtol=1e-5)
    assert torch.allclose(recipe.class_weights(labels, 3, 0.0)[:2], torch.ones(2))


def test_dense_metrics_by_hand():
    class Fixed(torch.nn.Module):  # predicts class 1 on the left half, background elsewhere
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            logits[:, 1, :, : x.shape[-1] // 2] = 1.0
            return logits, x
    images = torch.zeros(1, 3, 2, 4, dtype=torch.uint8)
    labels = torch.tensor([[[1, 1, 1, 0], [0, 0, 0, 0]]], dtype=torch.uint8)
    m = recipe.dense_metrics(Fixed(), images, labels, ["background", "x"], "t")
    # truth: 3 of class 1; prediction: columns 0-1 of both rows -> tp1 = 2, fp1 = 2, fn1 = 1.
    assert m["t/pixel_accuracy"] == pytest.approx(5 / 8)
    assert m["t/iou/x"] == pytest.approx(2 / 5) and m["t/iou/background"] == pytest.approx(3 / 6)
    assert m["t/mean_iou"] == pytest.approx((2 / 5 + 3 / 6) / 2) and m["t/mean_iou_categories"] == pytest.approx(2 / 5)
    assert m["t/all_background_pixel_accuracy"] == pytest.approx(5 / 8) and m["t/colour_mae"] == 0.0


def test_the_backbone_learns_the_dense_task():
    from refexp.config import TrainingConfig
    from refexp.training.engine import fit

    table, images, labels = _instances(8)
    data = recipe.DenseExamples(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                                crop_size=32, min_crop=1.0)
    torch.manual_seed(0)
    model = DensePretrainer(build_backbone("tiny", False), 3)
    before = recipe.dense_metrics(model, data.images, data.labels, ["background", "a", "b"], "t")
    weights = recipe.class_weights(data.labels, 3, 0.5)
    whole = {"images": data.images.float() / 255.0, "labels": data.labels.long()}
    model.train()
    initial = recipe.dense_loss(1.0, weights)(model, whole)[1]["loss/category"]
    cfg = TrainingConfig(steps=60, batch_size=8, lr=0.01, log_every=10, checkpoint_every=60)
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        metrics = fit(model, data, recipe.dense_loss(1.0, weights), cfg, out, seed=0, progress=False)
    model.train()
    assert recipe.dense_loss(1.0, weights)(model, whole)[1]["loss/category"] < 0.5 * initial
    after = recipe.dense_metrics(model, data.images, data.labels, ["background", "a", "b"], "t")
    assert after["t/mean_iou_categories"] > max(0.5, before["t/mean_iou_categories"])
    assert after["t/pixel_accuracy"] > after["t/all_background_pixel_accuracy"]
    assert metrics["train/steps"] == 60


def test_crops_are_seeded_and_labels_follow_the_pixels():
    _, images, labels = _instances(2)
    data = recipe.DenseExamples(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                                crop_size=16, min_crop=0.5)
    torch.manual_seed(4)
    a = data[0]
    torch.manual_seed(4)
    b = data[0]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert a["images"].shape == (3, 16, 16) and a["labels"].shape == (16, 16)
    # The label map moves with the image (crop and flip): red pixels and class-1 labels coincide,
    # up to the antialiased border.
    red, labelled = a["images"][0] > 0.5, a["labels"] == 1
    assert labelled.any() and (red & labelled).sum() >= 0.8 * (red | labelled).sum()
    assert PretrainBackboneConfig().backbone == "tiny"
