"""FORMAT.md 11.2's prepare recipe: the conformance vectors are reproduced bit for bit by an
implementation written from the text alone and by the project's own code, and the two agree on
every sample photo and on awkward shapes."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splitting.errors import InvalidInputError
from splitting.images import sample_images
from splitting.pixels import RECIPE_VERSION, prepare_image, resize_target
from tests.support import spec_prepare as spec_module
from tests.support.spec_prepare import Vector, load_vectors, spec_prepare

RECIPE_VERSION_OF_VECTORS, VECTORS = load_vectors()


def _sha(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def _as_project_input(pixels: np.ndarray) -> np.ndarray:
    """The project takes HxW, HxWx3, HxWx4: gray + alpha reaches it as gray (step 1)."""
    return pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 2 else pixels


def test_the_vectors_cover_every_colour_layout_and_both_directions() -> None:
    assert RECIPE_VERSION_OF_VECTORS == RECIPE_VERSION
    layouts = {v.pixels.shape[2] if v.pixels.ndim == 3 else 1 for v in VECTORS}
    assert layouts == {1, 2, 3, 4}
    shorter = [min(v.pixels.shape[:2]) for v in VECTORS]
    assert any(s > v.resize_to for s, v in zip(shorter, VECTORS, strict=True))  # shrinking
    assert any(s < v.resize_to for s, v in zip(shorter, VECTORS, strict=True))  # enlarging
    assert sum(v.expected is not None for v in VECTORS) >= 3


def test_the_text_only_implementation_imports_nothing_of_the_project() -> None:
    tree = ast.parse(Path(spec_module.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "json", "dataclasses", "pathlib", "numpy", "PIL"}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_every_vector_is_reproduced_from_the_format_text_alone(vector: Vector) -> None:
    prepared = spec_prepare(vector.pixels, vector.size, vector.resize_to)
    assert prepared.shape == (vector.size, vector.size, 3) and prepared.dtype == np.uint8
    assert _sha(prepared) == vector.sha256
    if vector.expected is not None:
        assert np.array_equal(prepared, vector.expected)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_the_project_prepares_every_vector_bit_for_bit(vector: Vector) -> None:
    assert resize_target(vector.size) == vector.resize_to
    prepared = prepare_image(_as_project_input(vector.pixels), vector.size)
    assert _sha(prepared) == vector.sha256
    if vector.expected is not None:
        assert np.array_equal(prepared, vector.expected)


@pytest.mark.slow  # about 5 s: the text-only weights are plain Python loops
def test_text_and_project_agree_on_every_sample_photo() -> None:
    for name, photo in sample_images():
        assert np.array_equal(prepare_image(photo, 224), spec_prepare(photo, 224, 256)), name


@pytest.mark.parametrize("size", [1, 2, 7, 32, 224])
def test_text_and_project_agree_on_awkward_shapes(size: int) -> None:
    rng = np.random.default_rng(size)
    shapes = [(1, 1, 3), (3, 5, 3), (300, 20, 3), (20, 300), (33, 33, 4), (2, 900, 3)]
    for shape in shapes:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = spec_prepare(image, size, resize_target(size))
        assert np.array_equal(prepare_image(image, size), expected), shape


def test_a_flat_image_stays_flat_at_any_scale() -> None:
    for shape in [(1, 1, 3), (7, 500, 3), (640, 480, 3), (100, 101, 3)]:
        for value in (0, 1, 128, 254, 255):
            prepared = prepare_image(np.full(shape, value, dtype=np.uint8), 224)
            assert (prepared == value).all(), (shape, value)


def test_the_recipe_stays_within_one_level_of_pillows_antialiased_bilinear() -> None:
    """The same filter as Pillow's BILINEAR, only the rounding of its weights is specified."""
    for name, photo in sample_images():
        height, width = photo.shape[:2]
        resized_w = (2 * width * 256 + min(height, width)) // (2 * min(height, width))
        resized_h = (2 * height * 256 + min(height, width)) // (2 * min(height, width))
        pillow = Image.fromarray(photo).resize((resized_w, resized_h), Image.Resampling.BILINEAR)
        left, top = (resized_w - 224) // 2, (resized_h - 224) // 2
        reference = np.asarray(pillow.crop((left, top, left + 224, top + 224)), dtype=np.int16)
        difference = np.abs(prepare_image(photo, 224).astype(np.int16) - reference)
        assert difference.max() <= 1, name
        assert difference.mean() < 0.01, name


def test_an_empty_image_or_size_is_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        prepare_image(np.zeros((0, 5, 3), dtype=np.uint8), 224)
    with pytest.raises(InvalidInputError, match="size"):
        prepare_image(np.zeros((5, 5, 3), dtype=np.uint8), 0)
