"""FORMAT.md 11.2's prepare recipe (version 2), written from the text alone.

Plain Python integers for every weight and numpy only to hold pixels and multiply integer
matrices; it never imports the project's pixel code, so agreeing with it means the text is
enough to get the project's bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHIFT = 22


def spec_prepare(pixels: np.ndarray, size: int, resize_to: int) -> np.ndarray:
    """uint8 HxW, HxWx2 (gray+alpha), HxWx3 or HxWx4 -> uint8 [size, size, 3]."""
    rgb = spec_channels(pixels)
    height, width = rgb.shape[:2]
    shorter = min(height, width)
    new_w = (2 * width * resize_to + shorter) // (2 * shorter)
    new_h = (2 * height * resize_to + shorter) // (2 * shorter)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    across = spec_weights(width, new_w, range(left, left + size))  # (size, width)
    down = spec_weights(height, new_h, range(top, top + size))  # (size, height)
    rows = _apply(rgb.transpose(0, 2, 1), across)  # (height, 3, size)
    out = _apply(rows.transpose(2, 1, 0), down)  # (size cols, 3, size rows)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def spec_channels(pixels: np.ndarray) -> np.ndarray:
    """Step 1: gray repeated, alpha dropped."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (1, 2):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3]


def spec_weights(n_in: int, n_out: int, kept: range) -> np.ndarray:
    """Step 4 for the kept output indices: a (len(kept), n_in) int64 matrix, rows summing to
    2**22."""
    big = 2 * max(n_in, n_out)
    matrix = np.zeros((len(kept), n_in), dtype=np.int64)
    for row, i in enumerate(kept):
        raw = [max(0, big - abs((2 * j + 1) * n_out - (2 * i + 1) * n_in)) for j in range(n_in)]
        total = sum(raw)
        running, previous = 0, 0
        for j, value in enumerate(raw):
            running += value
            rounded = (running * 2**SHIFT + total // 2) // total
            matrix[row, j] = rounded - previous
            previous = rounded
    return matrix


def _apply(pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Steps 5/6 along the last axis: (2**21 + sum w * p) >> 22, kept as 8 bits."""
    # float64 products and sums are integers below 2**53, so exact (and BLAS-fast).
    sums = (pixels.astype(np.float64) @ weights.T.astype(np.float64)).astype(np.int64)
    sums += 2 ** (SHIFT - 1)
    return np.clip(sums >> SHIFT, 0, 255).astype(np.uint8)


VECTOR_DIR = Path(__file__).resolve().parents[1] / "data" / "prepare"


@dataclass(frozen=True)
class Vector:
    """One conformance vector: decoded input pixels, the recipe's parameters, the answer."""

    name: str
    pixels: np.ndarray
    size: int
    resize_to: int
    sha256: str
    expected: np.ndarray | None


def load_vectors(directory: Path = VECTOR_DIR) -> tuple[int, list[Vector]]:
    """(recipe_version, vectors) from `vectors.json`; PNG decodes to the same samples anywhere."""
    manifest = json.loads((directory / "vectors.json").read_text())
    vectors = []
    for entry in manifest["vectors"]:
        output = entry["output"]
        vectors.append(
            Vector(
                name=entry["input"],
                pixels=_decode_png(directory / entry["input"]),
                size=entry["size"],
                resize_to=entry["resize_to"],
                sha256=entry["sha256"],
                expected=None if output is None else _decode_png(directory / output),
            )
        )
    return manifest["recipe_version"], vectors


def _decode_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        if image.format != "PNG" or image.mode not in ("L", "LA", "RGB", "RGBA"):
            raise ValueError(f"{path}: vectors are 8-bit L/LA/RGB/RGBA PNGs, got {image.mode}")
        return np.asarray(image)
