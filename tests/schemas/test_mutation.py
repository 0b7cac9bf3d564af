"""Mutated frames: every truncation fails with a FrameError; every flipped, zeroed, inserted or
deleted byte either decodes (to a tensor matching its header) or raises a FrameError subclass.
Nothing else may escape the decoder: no IndexError, no numpy or zlib error, no crash."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from schemas.errors import FrameError
from schemas.frame import FrameLimits, ModelInfo, decode_frame, encode_frame
from tests.support.frames import build_frame, header_fields

RNG = np.random.default_rng(1234)
LIMITS = FrameLimits(max_tensor_bytes=1 << 20)  # mutated sizes hit limits instead of RAM


def _photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[200:216, 200:216])


def _frames() -> dict[str, tuple[bytes, ModelInfo]]:
    """Valid frames of every codec, each with the catalog entry that accepts it."""
    tensors = {
        "lossless": RNG.standard_normal((8, 5, 5)).astype(np.float32),
        "fp16": RNG.standard_normal((4, 5)).astype(np.float32),
        "int8": RNG.standard_normal((16, 3, 3)).astype(np.float32),
        "int5": RNG.standard_normal((16, 3, 3)).astype(np.float32),
        "int4": RNG.standard_normal((15, 3, 3)).astype(np.float32),  # odd count: padding
        "int8-f32-params": np.array([[1000.3 + 0.001 * i for i in range(9)]], dtype=np.float32),
        "bool": RNG.integers(0, 2, 7).astype(bool),
        "jpeg": _photo(),
    }
    frames = {}
    for name, tensor in tensors.items():
        codec = {"bool": "lossless", "int8-f32-params": "int8"}.get(name, name)
        split = 0 if codec == "jpeg" else 1
        shapes = (tensor.shape, (), ()) if split == 0 else ((4, 4, 3), tensor.shape, ())
        info = ModelInfo(f"m-{name}", "feedc0de", shapes)
        raw = encode_frame(
            tensor,
            codec=codec,
            request_id=f"r-{name}",
            model=info.name,
            fingerprint=info.fingerprint,
            split=split,
            timestamps={"sent": 1.0},
            deadline_ms=100.0,
        )
        frames[name] = (raw, info)
    uncompressed = build_frame(
        header_fields(model="m-none", fingerprint="feedc0de"), payload=bytes(range(24))
    )
    frames["none"] = (uncompressed, ModelInfo("m-none", "feedc0de", ((4, 4, 3), (2, 3), ())))
    return frames


FRAMES = _frames()


def _decode_or_frame_error(data: bytes, info: ModelInfo) -> str:
    """'ok' or the error code; anything but a FrameError propagates and fails the test."""
    catalog = {info.name: info}
    options: list[dict[str, Any]] = [{"limits": LIMITS}, {"limits": LIMITS, "catalog": catalog}]
    for kwargs in options:
        try:
            frame = decode_frame(data, **kwargs)
        except FrameError as exc:
            assert str(exc), "errors must say what is wrong"
            return exc.code
        assert frame.tensor.shape == frame.header.shape
        assert frame.tensor.dtype.name == frame.header.dtype
    return "ok"


@pytest.mark.parametrize("name", list(FRAMES))
def test_frames_decode_unmutated(name: str) -> None:
    raw, info = FRAMES[name]
    assert _decode_or_frame_error(raw, info) == "ok"


@pytest.mark.parametrize("name", list(FRAMES))
def test_every_truncation_is_a_frame_error(name: str) -> None:
    raw, info = FRAMES[name]
    for cut in range(len(raw)):
        with pytest.raises(FrameError):
            decode_frame(raw[:cut], limits=LIMITS, catalog={info.name: info})


def _mutations(raw: bytes, position: int) -> list[bytes]:
    """Three changes of one byte (flip all bits, flip the lowest, zero it), if they change it."""
    variants = []
    for value in (raw[position] ^ 0xFF, raw[position] ^ 0x01, 0):
        if value != raw[position]:
            data = bytearray(raw)
            data[position] = value
            variants.append(bytes(data))
    return variants


@pytest.mark.parametrize("name", list(FRAMES))
def test_every_single_byte_mutation_decodes_or_raises_a_frame_error(name: str) -> None:
    raw, info = FRAMES[name]
    payload_start = len(raw) - int.from_bytes(raw[16:20], "little")
    for position in range(len(raw)):
        for data in _mutations(raw, position):
            code = _decode_or_frame_error(data, info)
            if position < 20:  # every preamble byte is checked
                assert code != "ok", f"preamble byte {position} changed unnoticed"
            if position >= payload_start and name not in ("jpeg", "none"):
                # zstd payloads carry a content checksum: no damage goes unnoticed
                assert code != "ok", f"zstd payload byte {position} changed unnoticed"


@pytest.mark.parametrize("name", list(FRAMES))
def test_random_multi_byte_damage_decodes_or_raises_a_frame_error(name: str) -> None:
    raw, info = FRAMES[name]
    for _ in range(300):
        data = bytearray(raw)
        action = RNG.integers(0, 3)
        position = int(RNG.integers(0, len(data)))
        if action == 0:  # scribble over a few bytes
            count = int(RNG.integers(1, 9))
            data[position : position + count] = RNG.integers(
                0, 256, count, dtype=np.uint8
            ).tobytes()
        elif action == 1:  # insert bytes
            count = int(RNG.integers(1, 5))
            data[position:position] = RNG.integers(0, 256, count, dtype=np.uint8).tobytes()
        else:  # delete bytes
            del data[position : position + int(RNG.integers(1, 5))]
        _decode_or_frame_error(bytes(data), info)
