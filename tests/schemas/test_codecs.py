"""Codec round trips over awkward tensors, accuracy of the lossy codecs, encoder refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
import zstandard
from numpy.lib.stride_tricks import as_strided
from PIL import Image

from schemas.codecs import (
    CODECS,
    DTYPES,
    IMAGE_CODECS,
    MAX_JPEG_SCANS,
    QUANT_TOP,
    EncodedTensor,
    decode_tensor,
    encode_tensor,
)
from schemas.errors import CodecError, LimitExceededError, PayloadError, UnknownCodecError

RNG = np.random.default_rng(20240601)


def _round_trip(array: np.ndarray, codec: str, **kwargs: int) -> np.ndarray:
    decoded = decode_tensor(encode_tensor(array, codec, **kwargs))
    assert decoded.shape == array.shape
    assert decoded.flags.writeable
    assert decoded.dtype.isnative
    return decoded


def _bits(array: np.ndarray) -> bytes:
    """Bit pattern in little-endian order, so NaN payloads and -0.0 are compared too."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _extremes(dtype: str) -> np.ndarray:
    """Values that break careless codecs: limits, zero, and for floats NaN/Inf/-0/subnormals."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return np.array([True, False, False, True, True])
    if dt.kind in "iu":
        info = np.iinfo(dt)
        middle = RNG.integers(info.min, info.max, size=20, dtype=dt, endpoint=True)
        return np.concatenate([np.array([info.min, info.max, 0, 1], dtype=dt), middle])
    finfo = np.finfo(dt)
    special = np.array(
        [
            np.nan,
            np.inf,
            -np.inf,
            -0.0,
            0.0,
            finfo.max,
            finfo.min,
            finfo.tiny,
            finfo.smallest_subnormal,
        ],
        dtype=dt,
    )
    return np.concatenate([special, RNG.standard_normal(20).astype(dt)])


def _awkward(base: np.ndarray) -> dict[str, np.ndarray]:
    """Views of `base` (needs >= 24 elements) that are not a plain contiguous array."""
    grid = base[:24].reshape(4, 6)
    return {
        "scalar": base[0].reshape(()),
        "one": base[:1].copy(),
        "empty": base[:0].copy(),
        "empty_2d_rows": np.empty((0, 5), dtype=base.dtype),
        "empty_2d_cols": np.empty((3, 0), dtype=base.dtype),
        "contiguous_3d": base[:24].reshape(2, 3, 4),
        "strided": grid[::2, ::3],
        "transposed": grid.T,
        "fortran": np.asfortranarray(grid),
        "negative_stride": grid[::-1, ::-1],
        "broadcast": np.broadcast_to(base[:6], (5, 6)),
        "zero_stride": as_strided(base[:1], shape=(3, 4), strides=(0, 0)),
        "big_endian": grid.astype(grid.dtype.newbyteorder(">")),
    }


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_lossless_is_bit_exact_for_every_dtype_and_layout(dtype: str) -> None:
    base = np.resize(_extremes(dtype), 30)
    for name, array in _awkward(base).items():
        decoded = _round_trip(array, "lossless")
        assert decoded.dtype.name == dtype, name
        assert _bits(decoded) == _bits(array), name


def test_lossless_keeps_nan_payload_bits() -> None:
    quiet_nan_with_payload = np.array([0x7FC12345, 0xFFC00001], dtype="<u4").view("<f4")
    decoded = _round_trip(quiet_nan_with_payload, "lossless")
    assert decoded.view("<u4").tolist() == [0x7FC12345, 0xFFC00001]


@pytest.mark.parametrize("source", ["float16", "float32", "float64"])
def test_fp16_rounds_exactly_like_ieee_half(source: str) -> None:
    base = np.resize(_extremes(source), 30)
    base = np.where(np.abs(base) > 60000, 1.5, base).astype(source)  # keep within fp16 range
    for name, array in _awkward(base).items():
        decoded = _round_trip(array, "fp16")
        assert decoded.dtype == np.float32, name
        expected = np.asarray(array).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(decoded, expected, err_msg=name)  # NaN == NaN here


def test_fp16_carries_nan_and_inf() -> None:
    array = np.array([np.nan, np.inf, -np.inf, 1.0, -2.5], dtype=np.float32)
    decoded = _round_trip(array, "fp16")
    assert np.isnan(decoded[0]) and decoded[1] == np.inf and decoded[2] == -np.inf
    assert decoded[3:].tolist() == [1.0, -2.5]


def test_fp16_refuses_finite_values_it_would_turn_into_inf() -> None:
    with pytest.raises(CodecError, match="fp16 overflow: 1 finite"):
        encode_tensor(np.array([1.0, 70000.0, np.inf], dtype=np.float32), "fp16")


def _params(encoded: EncodedTensor) -> tuple[np.ndarray, np.ndarray]:
    assert encoded.quant is not None
    values = np.frombuffer(
        encoded.params, dtype="<" + {"float16": "f2", "float32": "f4"}[encoded.quant["param_dtype"]]
    ).astype(np.float64)
    half = values.size // 2
    return values[:half], values[half:]


def _channel_spread(channels: int, width: int) -> np.ndarray:
    """Channels with very different ranges and offsets, as real activations have."""
    scales = np.logspace(-3, 2, channels)[:, None]
    offsets = np.linspace(-5, 5, channels)[:, None]
    return (RNG.standard_normal((channels, width)) * scales + offsets).astype(np.float32)


@pytest.mark.parametrize(("codec", "top"), [("int8", 255), ("int5", 31), ("int4", 15)])
def test_affine_error_is_within_half_a_step_per_channel(codec: str, top: int) -> None:
    array = _channel_spread(24, 49).reshape(24, 7, 7)
    encoded = encode_tensor(array, codec)
    decoded = decode_tensor(encoded).reshape(24, -1)
    scale, minimum = _params(encoded)
    flat = array.reshape(24, -1)
    error = np.abs(decoded - flat).max(axis=1)
    # In float64, as the encoder computes it: float32 rounding here could exceed the scale.
    ideal_step = (flat.max(axis=1).astype(np.float64) - flat.min(axis=1)) / top
    assert np.all(scale >= ideal_step)  # rounded up: the codes cover the range
    assert np.all(scale <= ideal_step * (1 + 2**-5) + 2**-14)  # ... without widening much
    assert np.all(minimum <= flat.min(axis=1))
    tolerance = scale / 2 + 4 * np.finfo(np.float32).eps * np.abs(flat).max(axis=1)
    assert np.all(error <= tolerance), (error / scale).max()


def test_int8_decodes_with_the_normative_formula() -> None:
    array = _channel_spread(5, 40)
    encoded = encode_tensor(array, "int8")
    scale, minimum = _params(encoded)
    codes = np.frombuffer(
        zstandard.ZstdDecompressor().decompress(encoded.payload), np.uint8
    ).reshape(5, 40)
    expected = (codes.astype(np.float32) * scale.astype(np.float32)[:, None]).astype(
        np.float32
    ) + minimum.astype(np.float32)[:, None]
    assert np.array_equal(decode_tensor(encoded), expected)


def test_int5_stores_one_code_per_byte_with_the_normative_formula() -> None:
    # One channel spanning 0..31 exactly: code v for value v, one byte each, no packing.
    array = np.array([[*range(32), 7.4, 7.6]], dtype=np.float32)
    encoded = encode_tensor(array, "int5")
    scale, minimum = _params(encoded)
    assert (scale[0], minimum[0]) == (1.0, 0.0)
    assert encoded.raw_bytes == array.size
    body = zstandard.ZstdDecompressor().decompress(encoded.payload)
    assert body == bytes([*range(32), 7, 8])
    assert np.array_equal(decode_tensor(encoded), np.array([[*range(32), 7, 8]], np.float32))


def test_int4_packs_two_codes_per_byte_low_nibble_first() -> None:
    # One channel spanning 0..15 exactly: code v for value v, so the packing is visible.
    array = np.array([[*range(16), 5]], dtype=np.float32)  # 17 values: one padding nibble
    encoded = encode_tensor(array, "int4")
    scale, minimum = _params(encoded)
    assert (scale[0], minimum[0]) == (1.0, 0.0)
    body = zstandard.ZstdDecompressor().decompress(encoded.payload)
    assert body == bytes([0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE, 0x05])
    assert np.array_equal(decode_tensor(encoded), array)


@pytest.mark.parametrize("codec", ["int8", "int5", "int4"])
def test_constant_channels_decode_exactly(codec: str) -> None:
    array = np.stack([np.full(10, 0.1), np.zeros(10), np.full(10, -3.0), np.linspace(0, 1, 10)])
    decoded = _round_trip(array.astype(np.float32), codec)
    np.testing.assert_allclose(decoded[0], 0.1, rtol=1e-3)
    assert np.all(decoded[1] == 0.0) and np.all(decoded[2] == -3.0)


@pytest.mark.parametrize("codec", ["int8", "int5", "int4"])
def test_affine_handles_awkward_layouts(codec: str) -> None:
    base = RNG.standard_normal(30).astype(np.float64)
    for name, array in _awkward(base).items():
        decoded = _round_trip(array, codec)
        assert decoded.dtype == np.float32, name
        if array.size:
            step = (np.ptp(array) if array.size > 1 else 0.0) / QUANT_TOP[codec]
            assert np.abs(decoded - array).max() <= step + 1e-3, name


def test_float16_params_fall_back_to_float32_when_they_would_lose_accuracy() -> None:
    # A large offset with a tiny range: float16 (spacing 0.5 near 1000) cannot place the
    # minimum finely enough, which would widen the step sevenfold.
    offset = np.array([[1000.3 + 0.001 * i for i in range(50)]], dtype=np.float32)
    encoded = encode_tensor(offset, "int8")
    assert encoded.quant == {"param_dtype": "float32"}
    assert len(encoded.params) == 2 * 1 * 4
    step = np.ptp(offset) / 255
    assert np.abs(decode_tensor(encoded) - offset).max() <= step / 2 + 1e-4

    beyond_half = np.array([[0.0, 1e6]], dtype=np.float32)  # float16 would overflow
    assert encode_tensor(beyond_half, "int4").quant == {"param_dtype": "float32"}

    typical = RNG.standard_normal((8, 20)).astype(np.float32)
    assert encode_tensor(typical, "int8").quant == {"param_dtype": "float16"}
    assert len(encode_tensor(typical, "int8").params) == 2 * 8 * 2


@pytest.mark.parametrize("codec", ["int8", "int5", "int4"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_affine_refuses_non_finite_values(codec: str, bad: float) -> None:
    array = np.ones((3, 4), dtype=np.float32)
    array[1, 2] = bad
    with pytest.raises(CodecError, match="NaN/Inf"):
        encode_tensor(array, codec)


def test_affine_refuses_values_beyond_float32() -> None:
    with pytest.raises(CodecError, match="beyond float32 range"):
        encode_tensor(np.array([1.0, 1e300]), "int8")
    with pytest.raises(CodecError, match="does not fit float32"):
        encode_tensor(np.array([[-3e38, 3e38]], dtype=np.float32), "int8")


@pytest.mark.parametrize("codec", ["fp16", "int8", "int5", "int4"])
@pytest.mark.parametrize("dtype", ["uint8", "int32", "bool"])
def test_lossy_codecs_take_only_floats(codec: str, dtype: str) -> None:
    with pytest.raises(CodecError, match="floating array"):
        encode_tensor(np.zeros((2, 2), dtype=dtype), codec)


def test_unsupported_dtypes_and_codecs_are_refused() -> None:
    with pytest.raises(CodecError, match="complex64 is not supported"):
        encode_tensor(np.zeros(3, dtype=np.complex64), "lossless")
    with pytest.raises(CodecError, match="not supported"):
        encode_tensor(np.array(["a", "b"]), "lossless")
    with pytest.raises(UnknownCodecError, match="unknown codec 'int2'"):
        encode_tensor(np.zeros(3, dtype=np.float32), "int2")


def _photo(size: int = 64) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100 : 100 + size, 180 : 180 + size])


def test_jpeg_round_trip_of_a_real_photo() -> None:
    image = _photo(224)
    encoded = encode_tensor(image, "jpeg")
    assert encoded.compression == "none" and encoded.quant == {"quality": 90}
    assert Image.open(io.BytesIO(encoded.payload)).format == "JPEG"
    decoded = decode_tensor(encoded)
    assert decoded.dtype == np.uint8 and decoded.shape == image.shape
    mse = np.mean((decoded.astype(np.float64) - image) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # PSNR: a faithful image, not noise
    smaller = encode_tensor(image, "jpeg", jpeg_quality=50)
    assert smaller.nbytes < encoded.nbytes


def test_webp_gives_back_the_very_pixels_sent() -> None:
    image = _photo(224)
    encoded = encode_tensor(image, "webp")
    assert encoded.compression == "none" and encoded.quant is None
    assert Image.open(io.BytesIO(encoded.payload)).format == "WEBP"
    assert np.array_equal(decode_tensor(encoded), image)
    # Lossless, yet far smaller than the raw pixels.
    assert encoded.nbytes < image.nbytes / 1.5


def test_webp_refuses_a_payload_of_another_format() -> None:
    image = _photo(32)
    jpeg = encode_tensor(image, "jpeg")
    forged = EncodedTensor(
        "webp", "uint8", image.shape, None, b"", jpeg.payload, "none", len(jpeg.payload)
    )
    with pytest.raises(PayloadError, match="not a WEBP image"):
        decode_tensor(forged)


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding() -> None:
    image = _photo(32)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", progressive=True)
    honest = buffer.getvalue()
    assert decode_tensor(encode_tensor(image, "jpeg")).shape == image.shape
    progressive = EncodedTensor(
        "jpeg", "uint8", image.shape, {"quality": 75}, b"", honest, "none", len(honest)
    )
    assert decode_tensor(progressive).shape == image.shape  # a real progressive JPEG decodes
    # Splice many empty scans before the end of image: what a decoding bomb looks like.
    scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    bomb = honest[:-2] + scan * (MAX_JPEG_SCANS + 1) + honest[-2:]
    hostile = EncodedTensor(
        "jpeg", "uint8", image.shape, {"quality": 75}, b"", bomb, "none", len(bomb)
    )
    with pytest.raises(LimitExceededError, match="scans"):
        decode_tensor(hostile)


def test_jpeg_takes_a_non_contiguous_image() -> None:
    image = _photo(64)[::2, ::2]
    assert decode_tensor(encode_tensor(image, "jpeg")).shape == (32, 32, 3)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((8, 8), dtype=np.uint8),
        np.zeros((8, 8, 4), dtype=np.uint8),
        np.zeros((8, 8, 3), dtype=np.float32),
        np.zeros((0, 8, 3), dtype=np.uint8),
    ],
)
@pytest.mark.parametrize("codec", IMAGE_CODECS)
def test_image_codecs_take_only_uint8_rgb_images(array: np.ndarray, codec: str) -> None:
    with pytest.raises(CodecError, match="uint8 \\(H, W, 3\\)"):
        encode_tensor(array, codec)


@pytest.mark.parametrize("quality", [0, 101, 90.0, True])
def test_jpeg_quality_must_be_an_int_in_range(quality: object) -> None:
    with pytest.raises(CodecError, match="quality"):
        encode_tensor(_photo(16), "jpeg", jpeg_quality=quality)  # type: ignore[arg-type]


def test_every_codec_reports_its_wire_bytes() -> None:
    array = RNG.standard_normal((16, 7, 7)).astype(np.float32)
    sizes = {
        codec: encode_tensor(array, codec).nbytes for codec in CODECS if codec not in IMAGE_CODECS
    }
    assert sizes["int4"] < sizes["int5"] < sizes["int8"] < sizes["fp16"] < sizes["lossless"]
