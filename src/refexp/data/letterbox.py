"""Resize-and-pad to the network's W x H input keeping the aspect ratio, and back (the segmentation
paper's Sec. 4: "resized and zero-padded to W x H"; the released code's resize_and_pad, centred).

- `Letterbox.fit(width, height, input_w, input_h)`: the scale and the centred offsets;
- `.image(rgb)` / `.mask(mask)`: an (h0, w0[, 3]) array into the (H, W[, 3]) input (masks by nearest
  neighbour, so labels stay binary; the padding is background);
- `.restore(scores)`: an (H, W) score map back to (h0, w0): the valid region cropped, then resized
  bilinearly, so predictions are thresholded at the image's own size before any metric.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    width: int  # the original image's
    height: int
    input_w: int
    input_h: int
    resized_w: int
    resized_h: int
    pad_x: int
    pad_y: int

    @classmethod
    def fit(cls, width: int, height: int, input_w: int, input_h: int) -> "Letterbox":
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        scale = min(input_h / height, input_w / width)
        resized_w = min(input_w, max(1, int(round(width * scale))))
        resized_h = min(input_h, max(1, int(round(height * scale))))
        return cls(width, height, input_w, input_h, resized_w, resized_h,
                   (input_w - resized_w) // 2, (input_h - resized_h) // 2)

    def _place(self, resized: np.ndarray) -> np.ndarray:
        out = np.zeros((self.input_h, self.input_w, *resized.shape[2:]), dtype=resized.dtype)
        out[self.pad_y:self.pad_y + self.resized_h, self.pad_x:self.pad_x + self.resized_w] = resized
        return out

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """(h0, w0, 3) uint8 -> (H, W, 3) uint8, zero outside the image."""
        self._check(rgb)
        return self._place(cv2.resize(rgb, (self.resized_w, self.resized_h), interpolation=cv2.INTER_LINEAR))

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """(h0, w0) bool -> (H, W) bool."""
        self._check(mask)
        resized = cv2.resize(mask.astype(np.uint8), (self.resized_w, self.resized_h), interpolation=cv2.INTER_NEAREST)
        return self._place(resized).astype(bool)

    def restore(self, scores: np.ndarray) -> np.ndarray:
        """(H, W) float scores -> (h0, w0) float32 scores on the original image."""
        if scores.shape != (self.input_h, self.input_w):
            raise ValueError(f"scores are {scores.shape}, the input is {(self.input_h, self.input_w)}")
        valid = scores[self.pad_y:self.pad_y + self.resized_h, self.pad_x:self.pad_x + self.resized_w]
        return cv2.resize(np.ascontiguousarray(valid, dtype=np.float32), (self.width, self.height),
                          interpolation=cv2.INTER_LINEAR)

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) inclusive pixel boxes x1, y1, x2, y2 on the original image -> the same on the input."""
        sx, sy = self.resized_w / self.width, self.resized_h / self.height
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        x1, y1 = b[:, 0] * sx + self.pad_x, b[:, 1] * sy + self.pad_y
        x2, y2 = (b[:, 2] + 1) * sx + self.pad_x - 1, (b[:, 3] + 1) * sy + self.pad_y - 1
        return np.stack([x1, y1, np.maximum(x1, x2), np.maximum(y1, y2)], 1).astype(np.float32)

    def _check(self, array: np.ndarray) -> None:
        if array.shape[:2] != (self.height, self.width):
            raise ValueError(f"array is {array.shape[1]}x{array.shape[0]} (WxH), the letterbox was fitted to "
                             f"{self.width}x{self.height}")


def any_positive_downsample(labels: np.ndarray, stride: int) -> np.ndarray:
    """(H, W) bool -> (H/s, W/s) bool: a cell is positive if any of its s x s pixels is (the low-res labels)."""
    h, w = labels.shape
    if h % stride or w % stride:
        raise ValueError(f"input {w}x{h} is not a multiple of the stride {stride}")
    return labels.reshape(h // stride, stride, w // stride, stride).any(axis=(1, 3))
