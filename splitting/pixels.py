"""Images to model input with numpy and Pillow only: a device without torch prepares them here.

The PyTorch model (splitting.partition) uses the same functions, so both backends see the same
pixels: resize the shorter side to S / 0.875, center-crop S x S, scale to [0, 1], normalise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from splitting.errors import InvalidInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize the shorter side to S / 0.875 before the center crop (the usual ImageNet evaluation).
CROP_FRACTION = 0.875


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """Any RGB (or gray, or RGBA) uint8 image -> uint8 (S, S, 3): resize, then center crop."""
    rgb = as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    scale = size / CROP_FRACTION / min(height, width)
    resized_w = max(size, round(width * scale))
    resized_h = max(size, round(height * scale))
    resized = Image.fromarray(rgb).resize((resized_w, resized_h), Image.Resampling.BILINEAR)
    left = (resized_w - size) // 2
    top = (resized_h - size) // 2
    return np.array(resized.crop((left, top, left + size, top + size)))


def checked_batch(images: np.ndarray, size: int, model: str) -> np.ndarray:
    """Prepared uint8 (S, S, 3) or (B, S, S, 3) images as a contiguous (B, S, S, 3) batch."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise InvalidInputError(
            f"preprocess takes uint8 numpy images, got {type(images).__name__}"
            f" {getattr(images, 'dtype', '')}"
        )
    batch = images[None] if images.ndim == 3 else images
    if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
        raise InvalidInputError(
            f"{model} takes prepared images of shape ({size}, {size}, 3) or"
            f" (B, {size}, {size}, 3), got {images.shape}; use prepare_image first"
        )
    return np.ascontiguousarray(batch)


def normalize(
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    size: int,
    model: str = "the model",
) -> np.ndarray:
    """Prepared uint8 images -> normalised float32 (B, 3, S, S), as the PyTorch path computes."""
    batch = checked_batch(images, size, model).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    shape = (1, 3, 1, 1)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(shape)
    std_a = np.asarray(std, dtype=np.float32).reshape(shape)
    return np.ascontiguousarray((batch - mean_a) / std_a)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InvalidInputError(
            f"images must be uint8 numpy arrays, got {type(image).__name__}"
            f" {getattr(image, 'dtype', '')}"
        )
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    raise InvalidInputError(f"images must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
