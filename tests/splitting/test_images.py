"""Sample images: real pictures from installed packages, and their augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from splitting.errors import InvalidInputError
from splitting.images import augmented_images, center_crop, sample_images


def test_samples_are_real_rgb_pictures_from_skimage_and_sklearn() -> None:
    samples = sample_images()
    names = [name for name, _ in samples]
    assert len(names) == len(set(names)) >= 15
    assert {"astronaut", "chelsea", "coffee", "rocket", "china", "flower"} <= set(names)
    for name, image in samples:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 100, name
        assert image.std() > 10, f"{name} is nearly flat"
    chelsea = dict(samples)["chelsea"]
    assert np.array_equal(chelsea, skimage.data.chelsea())


def test_samples_are_copies() -> None:
    first = sample_images()
    first[0][1][:] = 0
    assert sample_images()[0][1].any()


def test_augmented_images_are_prepared_distinct_and_reproducible() -> None:
    images = augmented_images(60, 96, seed=3)
    assert images.shape == (60, 96, 96, 3) and images.dtype == np.uint8
    assert len({image.tobytes() for image in images}) == 60
    assert np.array_equal(images, augmented_images(60, 96, seed=3))
    other_seed = augmented_images(60, 96, seed=4)
    count = len(sample_images())
    # the first pass is the plain center crops, whatever the seed; the rest are random
    assert np.array_equal(images[:count], other_seed[:count])
    assert not np.array_equal(images[count:], other_seed[count:])
    assert np.array_equal(images[1], center_crop(sample_images()[1][1], 96))


def test_augmentations_differ_from_the_plain_crops() -> None:
    count = len(sample_images())
    images = augmented_images(count * 5, 64, seed=0)
    centers = images[:count]
    augmented = images[count:]
    # no augmented image is just a center crop or its mirror image
    for index, image in enumerate(augmented):
        center = centers[index % count]
        assert not np.array_equal(image, center)
        assert not np.array_equal(image, center[:, ::-1])


def test_bad_arguments() -> None:
    assert augmented_images(0, 32).shape == (0, 32, 32, 3)
    with pytest.raises(InvalidInputError):
        augmented_images(-1, 32)
    with pytest.raises(InvalidInputError):
        augmented_images(4, 0)
