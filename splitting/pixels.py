"""Images to model input with numpy only: a device without torch prepares them here.

The PyTorch model (splitting.partition) and the ONNX Runtime path use the same functions, so
both backends see the same pixels. `prepare_image` is FORMAT.md section 11.2's recipe version
`RECIPE_VERSION`, in integer arithmetic, so any client that follows the text gets these very
bytes: make RGB, resize the shorter side to round(S / 0.875) with an antialiased triangle
filter, center-crop S x S. The worker then scales to [0, 1] and normalises.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitting.errors import InvalidInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize the shorter side to S / 0.875 before the center crop (the usual ImageNet evaluation).
CROP_FRACTION = 0.875
# FORMAT.md 11.2's recipe this module implements (1 was Pillow's private BILINEAR arithmetic).
RECIPE_VERSION = 2
# Fixed-point weights: 22 fraction bits keep 255 * 2**22 + 2**21 inside a signed 32-bit sum.
WEIGHT_BITS = 22


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """Any RGB (or gray, or RGBA) uint8 image -> uint8 (S, S, 3): resize, then center crop."""
    rgb = as_rgb_uint8(image)
    if size < 1:
        raise InvalidInputError(f"prepare_image needs size >= 1, got {size}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidInputError(f"prepare_image got an empty image of shape {image.shape}")
    height, width = rgb.shape[:2]
    resized_w, resized_h = resized_size(width, height, size)
    left = (resized_w - size) // 2
    top = (resized_h - size) // 2
    # Only the kept rows and columns are computed: each output pixel depends on its own taps.
    col_start, col_weights = _trimmed(*axis_weights(width, resized_w, left, size))
    row_start, row_weights = _trimmed(*axis_weights(height, resized_h, top, size))
    rows = slice(int(row_start[0]), int(row_start[-1]) + row_weights.shape[1])
    cols = slice(int(col_start[0]), int(col_start[-1]) + col_weights.shape[1])
    # Each pass gathers whole rows of a contiguous array (the fast way for numpy), so the
    # horizontal pass runs on the transposed photo and the vertical on the transposed result.
    columns = np.ascontiguousarray(rgb[rows, cols].transpose(1, 0, 2))
    across = _filter_rows(columns, col_start - cols.start, col_weights)  # (S cols, rows, 3)
    down = np.ascontiguousarray(across.transpose(1, 0, 2))  # (rows, S columns, 3)
    return _filter_rows(down, row_start - rows.start, row_weights)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(W', H'): the shorter side becomes R = round(S / crop_fraction), the longer
    round(L * R / shorter), both rounding halves up in exact integer arithmetic."""
    target = resize_target(size)
    shorter = min(width, height)
    return _scaled(width, target, shorter), _scaled(height, target, shorter)


def resize_target(size: int, crop_fraction: float = CROP_FRACTION) -> int:
    """R = round(S / crop_fraction), half up (224 -> 256)."""
    return max(size, int(np.floor(size / crop_fraction + 0.5)))


def _scaled(side: int, target: int, shorter: int) -> int:
    return (2 * side * target + shorter) // (2 * shorter)


def axis_weights(n_in: int, n_out: int, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of output samples first .. first+count-1 along one axis of n_in -> n_out:
    (start (count,) int64, weights (count, taps) int64 summing to 2**WEIGHT_BITS per row).

    With F = 2 * max(n_in, n_out), input j's raw weight for output i is
    max(0, F - |(2j + 1) * n_out - (2i + 1) * n_in|): a triangle of half-width
    max(1, n_in / n_out) input pixels around i's centre, in units that keep it integer."""
    reach = max(n_in, n_out)
    taps = min(n_in, 2 * (-(-n_in // n_out)) + 2)
    out = np.arange(first, first + count, dtype=np.int64)
    # Lowest input whose triangle can reach output i, kept inside the image.
    lowest = ((2 * out + 1) * n_in - 2 * reach) // (2 * n_out)
    start = np.clip(lowest, 0, n_in - taps)
    j = start[:, None] + np.arange(taps, dtype=np.int64)[None, :]
    distance = np.abs((2 * j + 1) * n_out - (2 * out[:, None] + 1) * n_in)
    raw = np.maximum(0, 2 * reach - distance)
    total = raw.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(raw, axis=1)
    rounded = ((cumulative << WEIGHT_BITS) + total // 2) // total
    weights = np.diff(rounded, axis=1, prepend=0)
    return start, weights


def _trimmed(start: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Taps that are zero for every output dropped (the window is generous)."""
    used = np.flatnonzero(weights.any(axis=0))
    return start + used[0], weights[:, used[0] : used[-1] + 1]


def _filter_rows(pixels: np.ndarray, start: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One pass along axis 0: out[i] = (sum_t w[i, t] * pixels[start[i] + t] + 2**21) >> 22."""
    # Sums stay below 255 * 2**22 + 2**21 < 2**31: int32 is exact, and half int64's traffic.
    acc = np.full((len(start), *pixels.shape[1:]), 1 << (WEIGHT_BITS - 1), dtype=np.int32)
    taps = weights.astype(np.int32)[:, :, None, None]
    for tap in range(weights.shape[1]):
        acc += taps[:, tap] * pixels[start + tap]
    return (acc >> WEIGHT_BITS).astype(np.uint8)


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
