"""The default frame limit against the frames real models send.

`largest_frame_bytes` bounds a model's frames from its split shapes; the tests check that
bound against real frames of incompressible data, and the default `max_frame_bytes` against
every registered model's largest frame (shapes found on PyTorch's meta device: no weights,
no compute).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.codecs import CODECS, INPUT_CODECS
from schemas.frame import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_TIMESTAMPS,
    FrameLimits,
    ModelInfo,
    encode_frame,
    frame_size_bound,
    largest_frame_bytes,
)
from splitting.registry import available_models, get_spec

# The built-in models that take more than this many pixels a side send more than the default
# allows at their first splits (FORMAT.md, "Limits"); a site that serves them raises it.
LARGE_INPUT_PX = 300
TENSOR_CODECS = [codec for codec in CODECS if codec not in ("jpeg", "webp")]


def split_shapes(name: str) -> tuple[tuple[int, ...], ...]:
    """Per-sample shape at every split of a registered model, from a dry run on meta tensors."""
    spec = get_spec(name)
    size = spec.input_size
    with torch.device("meta"):
        module = spec.build()
        x = torch.empty(1, 3, size, size)
        shapes: list[tuple[int, ...]] = [(size, size, 3)]
        for _, block in spec.blocks(module):
            x = block(x)
            shapes.append(tuple(int(d) for d in x.shape[1:]))
    shapes[-1] = ()
    return tuple(shapes)


def largest(name: str) -> int:
    return largest_frame_bytes(ModelInfo(name, "f" * 16, split_shapes(name)))


def widest_frame(tensor: np.ndarray, codec: str, split: int) -> bytes:
    """A frame with every header string at its longest (multi-byte characters) and every
    timestamp slot used: the most header one frame can carry."""
    return encode_frame(
        tensor,
        codec=codec,
        request_id="é" * MAX_ID_CHARS,
        model="m" * MAX_NAME_CHARS,
        fingerprint="f" * MAX_NAME_CHARS,
        split=split,
        device_id="é" * MAX_ID_CHARS,
        timestamps={
            f"{i:02d}" + "é" * (MAX_NAME_CHARS - 2): 1e9 + i for i in range(MAX_TIMESTAMPS)
        },
        deadline_ms=12345.678,
        jpeg_quality=100,
    )


@pytest.mark.parametrize("codec", TENSOR_CODECS)
def test_bound_holds_for_incompressible_tensors(codec: str) -> None:
    shape = (24, 28, 28)
    noise = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    frame = widest_frame(noise, codec, 1)
    assert len(frame) <= frame_size_bound(shape, 4)


@pytest.mark.parametrize("codec", INPUT_CODECS)
def test_bound_holds_for_noise_images(codec: str) -> None:
    shape = (224, 224, 3)
    noise = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    frame = widest_frame(noise, codec, 0)
    info = ModelInfo("m", "f", (shape, (8,), ()))
    assert len(frame) <= largest_frame_bytes(info)
    assert len(frame) <= frame_size_bound(shape, 2)


def test_default_limit_fits_every_registered_model_up_to_300_px() -> None:
    fitting: dict[str, int] = {}
    over: dict[str, int] = {}
    for name in available_models():
        size = largest(name)
        small = get_spec(name).input_size <= LARGE_INPUT_PX
        (fitting if small else over)[name] = size
        assert (size <= DEFAULT_MAX_FRAME_BYTES) == small, (name, size)
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"} <= set(fitting)
    # Room beyond the largest frame that fits: a tenth at least.
    assert 1.1 * max(fitting.values()) <= DEFAULT_MAX_FRAME_BYTES
    assert FrameLimits().max_frame_bytes == DEFAULT_MAX_FRAME_BYTES
