"""Writes FORMAT.md 11.2's conformance vectors into tests/data/prepare/ from the bundled sample
photos and the project's own prepare code: `python -m tests.support.make_prepare_vectors`.

Run it only when the recipe's version changes; the committed files are the contract, and the
tests check both the project and a text-only implementation against them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from splitting.images import sample_images
from splitting.pixels import RECIPE_VERSION, prepare_image, resize_target
from tests.support.spec_prepare import VECTOR_DIR

# (name, sample, rows, cols, mode, S, keep the full output): small crops of real photos in every
# colour layout the recipe names, shrinking, enlarging, portrait, landscape and square.
CASES = (
    ("chelsea-rgb", "chelsea", (60, 180), (120, 300), "RGB", 64, True),
    ("camera-gray", "camera", (40, 136), (200, 360), "L", 32, True),
    ("coffee-rgba", "coffee", (150, 210), (300, 380), "RGBA", 224, False),
    ("astronaut-la", "astronaut", (20, 120), (180, 280), "LA", 48, True),
    ("rocket-tall", "rocket", (100, 330), (300, 370), "RGB", 40, False),
    ("colorwheel-tiny", "colorwheel", (160, 197), (150, 203), "RGB", 224, True),
    ("china-wide", "china", (150, 230), (0, 480), "RGB", 64, False),
    ("astronaut-shrink", "astronaut", (0, 262), (240, 512), "RGB", 224, False),
    ("retina-square", "retina", (200, 300), (300, 400), "RGB", 100, False),
)


def _alpha(shape: tuple[int, int]) -> np.ndarray:
    """A diagonal ramp, so dropping alpha (not blending it) is what matches."""
    rows, cols = np.indices(shape)
    return ((rows + cols) * 255 // max(1, sum(shape) - 2)).astype(np.uint8)


def _input(sample: np.ndarray, mode: str) -> np.ndarray:
    if mode in ("L", "LA"):
        gray = np.asarray(Image.fromarray(sample).convert("L"))
        return gray if mode == "L" else np.dstack([gray, _alpha(gray.shape)])
    return sample if mode == "RGB" else np.dstack([sample, _alpha(sample.shape[:2])])


def write_vectors(directory: Path = VECTOR_DIR) -> None:
    samples = dict(sample_images())
    directory.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    for name, sample, rows, cols, mode, size, full in CASES:
        pixels = _input(samples[sample][slice(*rows), slice(*cols)], mode)
        Image.fromarray(pixels, mode=mode).save(directory / f"{name}.png", optimize=True)
        # The project takes HxWx3/HxWx4/HxW arrays; gray + alpha reaches it as gray (step 1).
        prepared = prepare_image(pixels[:, :, 0] if mode == "LA" else pixels, size)
        output = f"{name}.prepared.png" if full else None
        if output is not None:
            Image.fromarray(prepared).save(directory / output, optimize=True)
        entries.append(
            {
                "input": f"{name}.png",
                "size": size,
                "resize_to": resize_target(size),
                "sha256": hashlib.sha256(prepared.tobytes()).hexdigest(),
                "output": output,
            }
        )
    manifest = {"recipe_version": RECIPE_VERSION, "vectors": entries}
    (directory / "vectors.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    write_vectors()
