"""Real sample images that ship inside installed packages (no download at run time).

`sample_images()` gathers the photographs and micrographs of `skimage.data` and the two photos
of `sklearn.datasets.load_sample_images()`, all as RGB uint8. `augmented_images()` turns them
into any number of distinct prepared inputs through random crops, scales and flips.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

from splitting.errors import InvalidInputError, MissingExtraError

# skimage.data images bundled with the wheel (others need pooch and a download).
_SKIMAGE_COLOR = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
_SKIMAGE_GRAY = ("camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell", "page")
# Largest side kept in memory: augmentation crops from these, never needs more.
_MAX_SIDE = 640
# Random-resized-crop ranges: the fraction of the image area kept, and the aspect ratio.
_AREA_RANGE = (0.25, 1.0)
_ASPECT_RANGE = (3 / 4, 4 / 3)


def sample_images() -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8 HxWx3) pairs, always the same images in the same order."""
    return [(name, image.copy()) for name, image in _cached_samples()]


@lru_cache(maxsize=1)
def _cached_samples() -> tuple[tuple[str, np.ndarray], ...]:
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as exc:
        raise MissingExtraError(
            f"the sample images need {exc.name}: pip install 'splitmq[samples]'"
        ) from exc

    loaders: list[tuple[str, Callable[[], np.ndarray]]] = [
        (name, getattr(skimage.data, name)) for name in _SKIMAGE_COLOR + _SKIMAGE_GRAY
    ]
    loaders.append(("motorcycle", lambda: skimage.data.stereo_motorcycle()[0]))
    loaders.append(("logo", skimage.data.logo))
    images = [(name, _to_rgb(load())) for name, load in loaders]
    bunch = load_sample_images()
    for path, image in zip(bunch.filenames, bunch.images, strict=True):
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        images.append((name, _to_rgb(image)))
    return tuple((name, _limit_size(image)) for name, image in images)


def augmented_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n prepared inputs, uint8 (n, size, size, 3): random crops, scales and flips of the samples.

    The same (n, size, seed) always gives the same images; the first image of each pass over
    the samples is a plain center crop, so small n still covers the originals.
    """
    if n < 0 or size < 1:
        raise InvalidInputError(f"augmented_images needs n >= 0 and size >= 1, got {n}, {size}")
    samples = _cached_samples()
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for index in range(n):
        _, image = samples[index % len(samples)]
        first_pass = index < len(samples)
        out[index] = center_crop(image, size) if first_pass else _random_crop(image, size, rng)
    return out


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centered square, resized to size x size."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return _resize(image[top : top + side, left : left + side], size)


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    area = height * width * rng.uniform(*_AREA_RANGE)
    aspect = np.exp(rng.uniform(np.log(_ASPECT_RANGE[0]), np.log(_ASPECT_RANGE[1])))
    crop_w = int(min(width, max(8, round(np.sqrt(area * aspect)))))
    crop_h = int(min(height, max(8, round(np.sqrt(area / aspect)))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crop = image[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(np.ascontiguousarray(crop), size)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(resized)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        raise InvalidInputError(f"sample image has dtype {image.dtype}, expected uint8")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:  # composite over white: transparent pixels are stored black
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        blended = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(blended).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def _limit_size(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    scale = _MAX_SIDE / max(height, width)
    if scale >= 1:
        return image
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BILINEAR))
