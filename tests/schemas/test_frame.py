"""The binary frame: round trips, and every way decode_frame must refuse a frame."""

from __future__ import annotations

import json
import struct
import tracemalloc
from typing import Any

import numpy as np
import pytest
import zstandard

from schemas.codecs import DTYPES
from schemas.errors import (
    BadMagicError,
    CodecError,
    FingerprintMismatchError,
    FrameError,
    HeaderError,
    LengthMismatchError,
    LimitExceededError,
    OversizedFrameError,
    PayloadError,
    ShapeMismatchError,
    TruncatedFrameError,
    UncataloguedModelError,
    UnknownCodecError,
    UnknownSplitError,
    UnsupportedVersionError,
)
from schemas.frame import (
    PREAMBLE_SIZE,
    Frame,
    FrameLimits,
    ModelInfo,
    decode_frame,
    decode_frame_unless,
    encode_frame,
    peek_header,
)
from tests.support.frames import build_frame, header_fields, zstd

FINGERPRINT = "00112233aabbccdd"
CATALOG = {
    "toy": ModelInfo("toy", FINGERPRINT, ((16, 16, 3), (2, 3), (192, 7, 7), ())),
}
RNG = np.random.default_rng(7)


def _encode(tensor: Any, codec: str = "int8", **overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "codec": codec,
        "request_id": "4b1d5f0c9e2a4d1e8f7a6b5c4d3e2f10",
        "model": "toy",
        "fingerprint": FINGERPRINT,
        "split": 2,
        "device_id": "cam-1",
        "timestamps": {"captured": 100.25, "head_done": 100.5, "sent": 100.75},
        "deadline_ms": 250.0,
    }
    arguments.update(overrides)
    return encode_frame(tensor, **arguments)


def _activation() -> np.ndarray:
    return RNG.standard_normal((192, 7, 7)).astype(np.float32)


def _valid_lossless(values: np.ndarray | None = None, **fields: Any) -> bytes:
    """A hand-built frame (compression none) for a float32 (2, 3) tensor at split 1."""
    values = np.arange(6, dtype="<f4") if values is None else values
    body = values.view(np.uint8).reshape(-1, 4).T.tobytes()
    return build_frame(header_fields(raw_bytes=len(body), **fields), payload=body)


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("codec", ["lossless", "fp16", "int8", "int5", "int4"])
def test_round_trip_keeps_every_header_field(codec: str) -> None:
    tensor = _activation()
    frame = decode_frame(_encode(tensor, codec), catalog=CATALOG)
    header = frame.header
    assert header.request_id == "4b1d5f0c9e2a4d1e8f7a6b5c4d3e2f10"
    assert (header.model, header.fingerprint, header.split) == ("toy", FINGERPRINT, 2)
    assert (header.codec, header.dtype, header.shape) == (codec, "float32", (192, 7, 7))
    assert header.device_id == "cam-1" and header.deadline_ms == 250.0
    assert header.timestamps == {"captured": 100.25, "head_done": 100.5, "sent": 100.75}
    assert header.compression == "zstd"
    assert frame.tensor.shape == (192, 7, 7) and frame.tensor.flags.writeable
    if codec == "lossless":
        assert np.array_equal(frame.tensor, tensor)
    else:
        assert (
            np.abs(frame.tensor - tensor).max()
            < {"fp16": 0.01, "int8": 0.05, "int5": 0.35, "int4": 0.7}[codec]
        )


def test_jpeg_frame_at_split_zero() -> None:
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[:16, :16])
    raw = _encode(image, "jpeg", split=0, jpeg_quality=75)
    frame = decode_frame(raw, catalog=CATALOG)
    assert frame.header.quant == {"quality": 75} and frame.header.compression == "none"
    assert frame.tensor.shape == (16, 16, 3) and frame.tensor.dtype == np.uint8


def test_optional_fields_and_numpy_scalars() -> None:
    raw = _encode(_activation(), device_id="", timestamps=None, deadline_ms=None)
    header = decode_frame(raw).header
    assert header.device_id == "" and header.timestamps == {} and header.deadline_ms is None
    raw = _encode(_activation(), split=np.int64(2), timestamps={"sent": np.float32(1.5)})
    header = decode_frame(raw, catalog=CATALOG).header
    assert header.split == 2 and header.timestamps == {"sent": 1.5}


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_dtype_travels_losslessly_in_a_frame(dtype: str) -> None:
    tensor = (RNG.standard_normal((3, 5)) * 50).astype(dtype)
    frame = decode_frame(_encode(tensor, "lossless"))
    assert frame.header.dtype == dtype and frame.tensor.dtype.name == dtype
    assert np.array_equal(frame.tensor, tensor)


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    raw = _encode(_activation())
    for data in (bytearray(raw), memoryview(raw)):
        assert decode_frame(data).tensor.shape == (192, 7, 7)


def test_decoded_tensor_does_not_alias_the_frame() -> None:
    raw = bytearray(_valid_lossless())
    frame = decode_frame(raw)
    frame.tensor[0, 0] = 99.0
    assert decode_frame(raw).tensor[0, 0] == 0.0


def test_peek_header_skips_the_payload() -> None:
    raw = bytearray(_encode(_activation()))
    raw[-3] ^= 0xFF  # corrupt the zstd payload only
    header = peek_header(bytes(raw), catalog=CATALOG)
    assert header.request_id == "4b1d5f0c9e2a4d1e8f7a6b5c4d3e2f10"
    with pytest.raises(FrameError):
        decode_frame(bytes(raw))


def test_decode_frame_unless_leaves_the_named_codecs_undecoded() -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    jpeg = bytearray(_encode(image, "jpeg", split=0))
    jpeg[-3] ^= 0xFF  # a body that would not decode: it is never looked at
    assert decode_frame_unless(bytes(jpeg), ("jpeg", "webp"), catalog=CATALOG) is None
    raw = _encode(_activation())
    frame = decode_frame_unless(raw, ("jpeg", "webp"), catalog=CATALOG)
    assert frame is not None and np.array_equal(frame.tensor, decode_frame(raw).tensor)
    with pytest.raises(UncataloguedModelError):  # the header is validated either way
        decode_frame_unless(bytes(jpeg), ("jpeg",), catalog={})


# --------------------------------------------------------------------------------------------
# Preamble and lengths


def test_truncated_frames() -> None:
    raw = _encode(_activation())
    for cut in (0, 3, 4, 19, 20, PREAMBLE_SIZE + 10, len(raw) - 1):
        with pytest.raises(TruncatedFrameError):
            decode_frame(raw[:cut])
    with pytest.raises(TruncatedFrameError, match=f"frame is {len(raw) - 1} bytes"):
        decode_frame(raw[:-1])


def test_oversized_frame() -> None:
    raw = _encode(_activation())
    with pytest.raises(OversizedFrameError, match="over the limit of 1000"):
        decode_frame(raw, limits=FrameLimits(max_frame_bytes=1000))


@pytest.mark.parametrize("start", [b"XMQF", b"GET / HTTP/1.1\r\n\r\n", b'{"v":1}', b"s"])
def test_bad_magic(start: bytes) -> None:
    with pytest.raises(BadMagicError):
        decode_frame(start + _valid_lossless()[len(start) :])


def test_unknown_version() -> None:
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        decode_frame(build_frame(header_fields(), version=2))
    with pytest.raises(UnsupportedVersionError):
        decode_frame(b"SMQF\x00")


@pytest.mark.parametrize(("flags", "reserved"), [(1, 0), (0, 1), (128, 0)])
def test_reserved_preamble_bits_must_be_zero(flags: int, reserved: int) -> None:
    with pytest.raises(HeaderError, match="must be 0"):
        decode_frame(build_frame(header_fields(), flags=flags, reserved=reserved))


def test_header_length_over_the_limit() -> None:
    raw = _valid_lossless()
    with pytest.raises(LimitExceededError, match="header_len"):
        decode_frame(raw, limits=FrameLimits(max_header_bytes=100))
    # A lying header_len is refused before the frame is even checked for truncation.
    with pytest.raises(LimitExceededError):
        decode_frame(build_frame(header_fields(), header_len=2**32 - 1))


def test_trailing_bytes() -> None:
    with pytest.raises(LengthMismatchError, match="5 trailing bytes"):
        decode_frame(_valid_lossless() + b"extra")


def test_declared_lengths_that_lie() -> None:
    body = np.arange(6, dtype="<f4").tobytes()
    fields = header_fields()
    with pytest.raises(TruncatedFrameError):
        decode_frame(build_frame(fields, payload=body, payload_len=len(body) + 1))
    with pytest.raises(LengthMismatchError):
        decode_frame(build_frame(fields, payload=body, payload_len=len(body) - 1))
    header_len = len(json.dumps(fields).encode())
    with pytest.raises(HeaderError, match="not valid JSON"):  # header_len short: JSON cut
        moved = header_len - 30  # bytes the payload would have to take over
        decode_frame(
            build_frame(fields, payload=body, header_len=30, payload_len=len(body) + moved)
        )


# --------------------------------------------------------------------------------------------
# Header JSON


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"request_id": ', "not valid JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON|JSON object"),
        (json.dumps(header_fields()).replace("{", '{"model": "x", ', 1).encode(), "repeats"),
        (json.dumps(header_fields()).replace("250.0", "NaN").encode(), "NaN"),
        (json.dumps(header_fields()).replace("250.0", "Infinity").encode(), "Infinity"),
    ],
)
def test_malformed_header_json(header: bytes, message: str) -> None:
    with pytest.raises(HeaderError, match=message):
        decode_frame(build_frame(header))


def test_missing_and_unknown_header_fields() -> None:
    fields = header_fields()
    del fields["fingerprint"], fields["timestamps"]
    with pytest.raises(HeaderError, match="lacks field\\(s\\): fingerprint, timestamps"):
        decode_frame(build_frame(fields))
    with pytest.raises(HeaderError, match="unknown field\\(s\\): batch"):
        decode_frame(build_frame(header_fields(batch=4)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", ""),
        ("request_id", 17),
        ("model", None),
        ("fingerprint", 12),
        ("split", "2"),
        ("split", 2.0),
        ("split", True),
        ("split", -1),
        ("shape", "2x3"),
        ("shape", [2, "3"]),
        ("shape", [2, -3]),
        ("shape", [2, 3.0]),
        ("shape", [True, 3]),
        ("raw_bytes", -24),
        ("raw_bytes", None),
        ("quant", [1]),
        ("quant", "float16"),
        ("device_id", None),
        ("timestamps", [1.0]),
        ("timestamps", {"sent": "now"}),
        ("timestamps", {"sent": True}),
        ("timestamps", {"": 1.0}),
        ("deadline_ms", 0),
        ("deadline_ms", -5.0),
        ("deadline_ms", "250"),
        ("codec", 5),
        ("dtype", ["float32"]),
        ("compression", None),
    ],
)
def test_header_field_types_and_ranges(field: str, value: Any) -> None:
    with pytest.raises(HeaderError, match=field):
        decode_frame(build_frame(header_fields(**{field: value})))


def test_unknown_codec_compression_and_dtype() -> None:
    with pytest.raises(UnknownCodecError, match="unknown codec 'int2'"):
        decode_frame(build_frame(header_fields(codec="int2")))
    with pytest.raises(HeaderError, match="unknown compression 'gzip'"):
        decode_frame(build_frame(header_fields(compression="gzip")))
    with pytest.raises(HeaderError, match="unknown dtype 'complex64'"):
        decode_frame(build_frame(header_fields(dtype="complex64")))
    with pytest.raises(HeaderError, match="codec int8 decodes to float32, header says float64"):
        decode_frame(build_frame(header_fields(codec="int8", dtype="float64")))
    with pytest.raises(HeaderError, match="codec jpeg decodes to uint8"):
        decode_frame(build_frame(header_fields(codec="jpeg", dtype="float32", shape=[4, 4, 3])))


@pytest.mark.parametrize(
    ("codec", "quant"),
    [
        ("int8", None),
        ("int8", {}),
        ("int8", {"param_dtype": "float64"}),
        ("int4", {"param_dtype": ["float16"]}),
        ("int8", {"param_dtype": "float16", "axis": 0}),
        ("lossless", {"param_dtype": "float16"}),
        ("fp16", {}),
        ("jpeg", None),
        ("jpeg", {"quality": 0}),
        ("jpeg", {"quality": "90"}),
    ],
)
def test_quant_must_match_the_codec(codec: str, quant: Any) -> None:
    dtype = {"jpeg": "uint8", "lossless": "float32"}.get(codec, "float32")
    shape = [4, 4, 3] if codec == "jpeg" else [2, 3]
    with pytest.raises(HeaderError, match=r"quant|quality|param_dtype"):
        decode_frame(build_frame(header_fields(codec=codec, dtype=dtype, shape=shape, quant=quant)))


# --------------------------------------------------------------------------------------------
# Shape, dtype and payload disagreeing; limits


def test_payload_too_short_for_the_declared_shape() -> None:
    fields = header_fields(
        codec="int8", shape=[192, 7, 7], raw_bytes=9408, quant={"param_dtype": "float16"}
    )
    raw = build_frame(fields, params=bytes(192 * 4), payload=bytes(1200))
    with pytest.raises(
        LengthMismatchError, match=r"payload is 1200 bytes, shape \(192, 7, 7\) int8 needs 9408"
    ):
        decode_frame(raw)


def test_raw_bytes_disagreeing_with_shape_and_dtype() -> None:
    with pytest.raises(
        LengthMismatchError, match=r"raw_bytes is 20, shape \(2, 3\) float32 needs 24"
    ):
        decode_frame(build_frame(header_fields(raw_bytes=20), payload=bytes(20)))
    fields = header_fields(dtype="float64", raw_bytes=24)  # 6 float64 need 48
    with pytest.raises(LengthMismatchError, match="needs 48"):
        decode_frame(build_frame(fields, payload=bytes(24)))
    fields = header_fields(
        codec="int4", shape=[3, 3], raw_bytes=4, quant={"param_dtype": "float16"}
    )
    with pytest.raises(LengthMismatchError, match="needs 5"):  # ceil(9 / 2)
        decode_frame(build_frame(fields, params=bytes(12), payload=bytes(4)))


def test_params_section_of_the_wrong_length() -> None:
    fields = header_fields(
        codec="int8", shape=[4, 5], raw_bytes=20, quant={"param_dtype": "float16"}
    )
    with pytest.raises(LengthMismatchError, match=r"params section is 8 bytes.*needs 16"):
        decode_frame(build_frame(fields, params=bytes(8), payload=bytes(20)))
    with pytest.raises(LengthMismatchError, match=r"params section is 4 bytes.*needs 0"):
        decode_frame(build_frame(header_fields(), params=bytes(4), payload=bytes(24)))


def test_shape_over_the_tensor_limit_is_refused_before_allocating() -> None:
    huge = header_fields(shape=[100000, 100000], raw_bytes=4 * 10**10)
    with pytest.raises(LimitExceededError, match="40000000000 bytes"):
        decode_frame(build_frame(huge, payload=zstd(b"")))
    small_limit = FrameLimits(max_tensor_bytes=20)
    with pytest.raises(LimitExceededError, match="over the limit of 20"):
        decode_frame(_valid_lossless(), limits=small_limit)


def test_too_many_dimensions() -> None:
    with pytest.raises(LimitExceededError, match="9 dimensions, limit 8"):
        decode_frame(build_frame(header_fields(shape=[1] * 9, raw_bytes=4), payload=bytes(4)))


def test_jpeg_shape_must_be_an_image() -> None:
    fields = header_fields(
        codec="jpeg", dtype="uint8", shape=[4, 4], quant={"quality": 90}, raw_bytes=10
    )
    with pytest.raises(ShapeMismatchError, match="jpeg carries"):
        decode_frame(build_frame(fields, payload=bytes(10)))


# --------------------------------------------------------------------------------------------
# zstd: bombs and malformed frames


def _int8_fields(**overrides: Any) -> dict[str, Any]:
    fields = {
        "codec": "int8",
        "shape": [192, 7, 7],
        "raw_bytes": 9408,
        "compression": "zstd",
        "quant": {"param_dtype": "float16"},
    }
    return header_fields(**{**fields, **overrides})


def _zero_params() -> bytes:
    return np.zeros(2 * 192, dtype="<f2").tobytes()


def _bomb(size: int) -> bytes:
    """A zstd frame of `size` zero bytes whose header declares its size (a few KB)."""
    return zstandard.ZstdCompressor(level=1).compress(bytes(size))


def _streamed_bomb(size: int) -> bytes:
    """The same without a declared content size (written as a stream)."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


def _peak_bytes_while(call: Any) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zstd_bomb_declaring_its_real_size_is_refused_unexpanded() -> None:
    bomb = _bomb(256 << 20)
    assert len(bomb) < 100_000
    raw = build_frame(_int8_fields(), params=_zero_params(), payload=bomb)

    def decode() -> None:
        with pytest.raises(LengthMismatchError, match="declares 268435456 decompressed bytes"):
            decode_frame(raw)

    assert _peak_bytes_while(decode) < 4 << 20


def test_zstd_bomb_lying_about_its_size_stops_at_the_declared_size() -> None:
    bomb = bytearray(_bomb(256 << 20))
    # Frame header: magic (4), descriptor 0x80 (4-byte content size), window byte, size.
    assert bomb[4] == 0x80
    struct.pack_into("<I", bomb, 6, 9408)
    raw = build_frame(_int8_fields(), params=_zero_params(), payload=bytes(bomb))

    def decode() -> None:
        with pytest.raises(PayloadError, match="corrupt zstd payload"):
            decode_frame(raw)

    assert _peak_bytes_while(decode) < 4 << 20


def test_zstd_frame_without_content_size_is_refused() -> None:
    raw = build_frame(_int8_fields(), params=_zero_params(), payload=_streamed_bomb(64 << 20))
    with pytest.raises(PayloadError, match="does not declare its content size"):
        decode_frame(raw)


def test_zstd_payload_is_bounded_by_the_tensor_limit() -> None:
    # A shape whose decoded size is over the limit is refused before decompression.
    fields = header_fields(
        codec="lossless", dtype="uint8", shape=[64 << 20], raw_bytes=64 << 20, compression="zstd"
    )
    raw = build_frame(fields, payload=_bomb(64 << 20))
    with pytest.raises(LimitExceededError):
        decode_frame(raw, limits=FrameLimits(max_tensor_bytes=1 << 20))


def test_malformed_zstd_payloads() -> None:
    body = bytes(9408)
    good = zstd(body)
    cases: list[tuple[bytes, type[FrameError], str]] = [
        (b"", PayloadError, "not a zstd frame"),
        (b"not zstd at all", PayloadError, "not a zstd frame"),
        (good[:-4], PayloadError, "ends before its frame"),
        (good + good, LengthMismatchError, "bytes follow the zstd frame"),
        (good + b"\x00", LengthMismatchError, "1 bytes follow"),
        (zstd(bytes(9407)), LengthMismatchError, "declares 9407"),
    ]
    for payload, error, message in cases:
        raw = build_frame(_int8_fields(compression="zstd"), params=_zero_params(), payload=payload)
        with pytest.raises(error, match=message):
            decode_frame(raw)


# --------------------------------------------------------------------------------------------
# Payload contents


def test_bool_bytes_other_than_zero_and_one() -> None:
    fields = header_fields(dtype="bool", shape=[4], raw_bytes=4)
    assert decode_frame(build_frame(fields, payload=b"\x00\x01\x01\x00")).tensor.tolist() == [
        False,
        True,
        True,
        False,
    ]
    with pytest.raises(PayloadError, match="bool"):
        decode_frame(build_frame(fields, payload=b"\x00\x01\x02\x00"))


def test_int4_padding_nibble_must_be_zero() -> None:
    fields = header_fields(
        codec="int4", shape=[1, 3], raw_bytes=2, quant={"param_dtype": "float16"}
    )
    params = np.array([1.0, 0.0], dtype="<f2").tobytes()
    assert decode_frame(
        build_frame(fields, params=params, payload=b"\x21\x03")
    ).tensor.tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(PayloadError, match="padding nibble"):
        decode_frame(build_frame(fields, params=params, payload=b"\x21\x53"))


def test_int5_codes_above_31_are_refused() -> None:
    fields = header_fields(
        codec="int5", shape=[1, 3], raw_bytes=3, quant={"param_dtype": "float16"}
    )
    params = np.array([0.5, -1.0], dtype="<f2").tobytes()
    assert decode_frame(
        build_frame(fields, params=params, payload=b"\x00\x02\x1f")
    ).tensor.tolist() == [[-1.0, 0.0, 14.5]]
    with pytest.raises(PayloadError, match="code above 31"):
        decode_frame(build_frame(fields, params=params, payload=b"\x00\x20\x1f"))


@pytest.mark.parametrize("params", [[np.nan, 0.0], [1.0, np.inf], [-1.0, 0.0]])
def test_bad_quantization_parameters(params: list[float]) -> None:
    fields = header_fields(
        codec="int8", shape=[1, 2], raw_bytes=2, quant={"param_dtype": "float16"}
    )
    raw = build_frame(fields, params=np.array(params, dtype="<f2").tobytes(), payload=b"\x00\xff")
    with pytest.raises(PayloadError, match="quantization parameters"):
        decode_frame(raw)


def test_large_but_finite_parameters_decode_by_the_formula() -> None:
    fields = header_fields(
        codec="int8", shape=[1, 2], raw_bytes=2, quant={"param_dtype": "float16"}
    )
    params = np.array([60000.0, -8.0], dtype="<f2").tobytes()
    raw = build_frame(fields, params=params, payload=b"\x00\xff")
    assert decode_frame(raw).tensor.tolist() == [[-8.0, float(np.float32(255 * 60000.0) - 8)]]


def test_quantization_parameters_that_would_decode_to_inf() -> None:
    fields = header_fields(
        codec="int8", shape=[1, 2], raw_bytes=2, quant={"param_dtype": "float32"}
    )
    params = np.array([3e38, 0.0], dtype="<f4").tobytes()
    with pytest.raises(PayloadError, match="finite float32"):
        decode_frame(build_frame(fields, params=params, payload=b"\x00\xff"))


def _jpeg_fields(height: int, width: int, body: bytes) -> dict[str, Any]:
    return header_fields(
        codec="jpeg",
        dtype="uint8",
        shape=[height, width, 3],
        raw_bytes=len(body),
        quant={"quality": 90},
        split=0,
    )


def _jpeg(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_jpeg_payload_problems() -> None:
    image = RNG.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    body = _jpeg(image)
    assert decode_frame(build_frame(_jpeg_fields(16, 24, body), payload=body)).tensor.shape == (
        16,
        24,
        3,
    )
    with pytest.raises(ShapeMismatchError, match="24x16"):  # a lie about the size
        decode_frame(build_frame(_jpeg_fields(24, 16, body), payload=body))
    gray = _jpeg(image[:, :, 0])
    with pytest.raises(ShapeMismatchError, match="JPEG is L"):
        decode_frame(build_frame(_jpeg_fields(16, 24, gray), payload=gray))
    with pytest.raises(PayloadError, match="not a JPEG"):
        garbage = b"\x89PNG not a jpeg"
        decode_frame(build_frame(_jpeg_fields(16, 24, garbage), payload=garbage))
    cut = body[: len(body) // 2]
    with pytest.raises(PayloadError, match="JPEG"):
        decode_frame(build_frame(_jpeg_fields(16, 24, cut), payload=cut))
    with pytest.raises(LengthMismatchError, match="jpeg body is empty"):
        decode_frame(build_frame(_jpeg_fields(16, 24, b""), payload=b""))


# --------------------------------------------------------------------------------------------
# Catalog


def test_catalog_checks() -> None:
    tensor = _activation()
    with pytest.raises(UncataloguedModelError, match="unknown model 'resnet18'; known: toy"):
        decode_frame(_encode(tensor, model="resnet18"), catalog=CATALOG)
    with pytest.raises(FingerprintMismatchError, match="different weights"):
        decode_frame(_encode(tensor, fingerprint="ffffffffffffffff"), catalog=CATALOG)
    with pytest.raises(UnknownSplitError, match=r"split 3 is outside 0\.\.2"):
        decode_frame(_encode(np.zeros(()), "lossless", split=3), catalog=CATALOG)
    with pytest.raises(UnknownSplitError, match="split 9"):
        decode_frame(_encode(tensor, split=9), catalog=CATALOG)
    with pytest.raises(
        ShapeMismatchError, match=r"carries shape \(2, 3\), frame has \(192, 7, 7\)"
    ):
        decode_frame(_encode(tensor, split=1), catalog=CATALOG)
    # Without a catalog the same frames decode: the catalog is what knows the model.
    assert isinstance(decode_frame(_encode(tensor, split=1)), Frame)


def test_catalog_applies_to_peek_header_too() -> None:
    with pytest.raises(FingerprintMismatchError):
        peek_header(_encode(_activation(), fingerprint="x"), catalog=CATALOG)


def test_model_info() -> None:
    info = ModelInfo("m", "f", [[3, 3, 3], [4], []])  # type: ignore[arg-type]
    assert info.n == 2 and info.split_shapes == ((3, 3, 3), (4,), ())
    with pytest.raises(ValueError):
        ModelInfo("m", "f", ())


# --------------------------------------------------------------------------------------------
# Encoder refusals


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"request_id": ""}, HeaderError, "request_id"),
        ({"model": ""}, HeaderError, "model"),
        ({"split": -1}, HeaderError, "split"),
        ({"split": 1.5}, HeaderError, "split"),
        ({"timestamps": {"sent": float("nan")}}, HeaderError, "timestamps"),
        ({"deadline_ms": 0.0}, HeaderError, "deadline_ms"),
        ({"deadline_ms": float("inf")}, HeaderError, "deadline_ms"),
        ({"codec": "bf16"}, UnknownCodecError, "bf16"),
    ],
)
def test_encoder_refuses_what_the_decoder_would(
    overrides: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _encode(_activation(), **overrides)


def test_encoder_codec_refusals_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        _encode(np.array([1.0, np.nan], dtype=np.float32), "int8")
