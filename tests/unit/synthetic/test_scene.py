"""Scenes: occlusion-respecting, disjoint masks that match the rendered pixels."""
from __future__ import annotations

import numpy as np

from refexp.data.synthetic.render import shape_mask
from refexp.data.synthetic.scene import MIN_PIXELS
from refexp.data.synthetic.vocabulary import COLOURS, SHAPES


def test_masks_are_disjoint_and_cover_the_image(default_images):
    for item in default_images[:60]:
        stack = np.stack([r.mask for r in item.scene.regions])
        assert (stack.sum(axis=0) == 1).all(), f"image {item.image_id}: masks overlap or leave holes"


def test_object_masks_are_exactly_the_visible_object_pixels(default_images):
    for item in default_images[:60]:
        img = item.scene.image
        for o in item.scene.objects:
            assert o.area >= MIN_PIXELS
            assert (img[o.mask] == COLOURS[o.colour]).all()
        # the occluder wins: each pixel shows the colour of the last object drawn there
        for o in item.scene.objects:
            later = [p for p in item.scene.objects if p.index > o.index]
            for p in later:
                assert not (o.mask & p.mask).any()


def test_later_objects_occlude_earlier_ones():
    # two overlapping shapes: the earlier one's visible mask excludes the later one's pixels
    first = shape_mask("square", 40, 40, 15, 96, 96)
    second = shape_mask("circle", 52, 40, 12, 96, 96)
    label = np.zeros((96, 96), dtype=int)
    label[first] = 1
    label[second] = 2
    assert ((label == 1) == (first & ~second)).all()


def test_shapes_are_distinct_at_small_size():
    masks = {s: shape_mask(s, 16, 16, 8, 32, 32) for s in SHAPES}
    assert len(SHAPES) >= 8
    for a in SHAPES:
        assert masks[a].sum() > 40, a
        for b in SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)


def test_scene_has_stuff_below_objects_and_the_configured_object_count(default_images):
    for item in default_images[:60]:
        scene = item.scene
        assert 2 <= len(scene.stuff) <= 3
        assert 2 <= len(scene.objects) + scene.dropped_objects <= 6
        assert all(r.kind == "stuff" for r in scene.regions[: len(scene.stuff)])
