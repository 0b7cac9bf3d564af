"""Tensor codecs: how one per-sample tensor becomes bytes on the wire, and back.

A codec turns an array into a *body* (plus, for int8/int5/int4, a small binary *params* section with
the per-channel scales and minimums); the body is then zstd-compressed, except for "jpeg" whose
body is already compressed. `FORMAT.md` specifies every byte; this module is the reference.

- "lossless": any supported dtype, bit-exact. Body = the little-endian bytes, byte-shuffled.
- "fp16": floating input, float16 on the wire (byte-shuffled), decodes to float32.
- "int8"/"int5"/"int4": floating input, per-channel affine quantization along axis 0 with
  256/32/16 levels; int8 and int5 store one code per byte (zstd's entropy stage squeezes
  int5's unused top bits), int4 packs two codes per byte. Decodes to float32.
- "jpeg": a uint8 (H, W, 3) RGB image (split 0), decodes to uint8 (H, W, 3). Lossy: it changes
  the model's answer on some inputs.
- "webp": the same image as lossless WebP (split 0's exact encoding): decodes to the very pixels
  that were sent, so the worker computes what the device would have.

Each codec is one `Codec` subclass (encode, the header's `params` and `raw_bytes`, decode) in
`REGISTRY`; `encode_tensor`, `decode_tensor` and `check_layout` look the name up once.

Decoding validates every declared size against the bytes present and against a limit before it
allocates, so hostile input raises a `FrameError` subclass, never a crash or a huge allocation.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import zstandard
from PIL import Image

from schemas.errors import (
    CodecError,
    HeaderError,
    LengthMismatchError,
    LimitExceededError,
    PayloadError,
    ShapeMismatchError,
    UnknownCodecError,
)
from schemas.imaging import MAX_JPEG_SCANS as MAX_JPEG_SCANS  # part of this module's API
from schemas.imaging import (
    ImageStructure,
    jpeg_structure,
    webp_structure,
)
from splitmq_base.validation import did_you_mean

COMPRESSIONS = ("zstd", "none")
Buffer = bytes | bytearray | memoryview

# Wire dtypes: every multi-byte value is little-endian.
DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "float64": np.dtype("<f8"),
    "uint8": np.dtype("u1"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "bool": np.dtype("?"),
}
FLOAT_DTYPES = ("float16", "float32", "float64")
# Quantization parameters travel as float16 unless that would cost accuracy (see _affine_params).
PARAM_DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}

DEFAULT_JPEG_QUALITY = 90
DEFAULT_ZSTD_LEVEL = 1
DEFAULT_MAX_TENSOR_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_NDIM = 8

_F32 = np.dtype("<f4")
# float16 parameters are kept when they widen a channel's step by at most this fraction, or
# when the step is below float16's smallest normal (such steps are accurate in absolute terms).
_F16_STEP_SLACK = 2.0**-5
_F16_TINY_STEP = 2.0**-14


@dataclass(frozen=True)
class EncodedTensor:
    """One encoded tensor: what a frame carries besides its routing fields.

    `dtype` and `shape` describe the tensor the decoder returns. `params` is the binary
    parameter section (int8/int5/int4 only, else empty); `payload` is the body after `compression`;
    `raw_bytes` is the body's length before compression.
    """

    codec: str
    dtype: str
    shape: tuple[int, ...]
    quant: Mapping[str, Any] | None
    params: Buffer
    payload: Buffer
    compression: str
    raw_bytes: int

    @property
    def nbytes(self) -> int:
        """Bytes this tensor costs on the wire (params + payload, without the frame header)."""
        return len(self.params) + len(self.payload)


# --------------------------------------------------------------------------------------------
# The codecs: one class each, behind one registry. Adding a codec is one class and one line.


class Codec:
    """One wire codec: how its body is built, what its header declares, how it decodes.

    `image`: the tensor is a uint8 (H, W, 3) image whose body is already compressed (sent
    with compression "none"). `exact`: the decoded tensor is bit-identical to the encoded one.
    """

    name: ClassVar[str]
    image: ClassVar[bool] = False
    exact: ClassVar[bool] = False
    #: dtypes the decoder may return; the header's dtype must be one of them.
    decoded_dtypes: ClassVar[tuple[str, ...]] = ("float32",)

    def encode(self, a: np.ndarray, *, jpeg_quality: int, zstd_level: int) -> EncodedTensor:
        """Encode one per-sample array; raises `CodecError` when this codec cannot take it."""
        raise NotImplementedError

    def params(self, quant: Mapping[str, Any] | None, shape: tuple[int, ...]) -> int:
        """Validate the header's `quant` object; return the params section's length."""
        if quant is not None:
            raise HeaderError(f"codec {self.name} takes no quant parameters, got {quant!r}")
        return 0

    def raw_bytes(self, dtype: str, count: int) -> int | None:
        """The body's length before compression, or None when not derivable (images)."""
        return None

    def decode(
        self, body: Buffer, encoded: EncodedTensor, shape: tuple[int, ...], count: int
    ) -> np.ndarray:
        """The tensor from a body whose declared sizes `check_layout` has validated."""
        raise NotImplementedError


class _ZstdCodec(Codec):
    """A codec whose body is zstd-compressed on the wire."""

    def encode(self, a: np.ndarray, *, jpeg_quality: int, zstd_level: int) -> EncodedTensor:
        shape = tuple(int(n) for n in a.shape)
        dtype, body, quant, params = self.body(a)
        payload = _compressor(zstd_level).compress(body)
        return EncodedTensor(self.name, dtype, shape, quant, params, payload, "zstd", len(body))

    def body(self, a: np.ndarray) -> tuple[str, bytes, dict[str, Any] | None, bytes]:
        """(decoded dtype, uncompressed body, header quant, params section) of `a`."""
        raise NotImplementedError


class LosslessCodec(_ZstdCodec):
    """Any supported dtype, bit-exact: the little-endian bytes, byte-shuffled."""

    name = "lossless"
    exact = True
    decoded_dtypes = tuple(DTYPES)

    def body(self, a: np.ndarray) -> tuple[str, bytes, dict[str, Any] | None, bytes]:
        dtype = _dtype_name(a)
        return dtype, _shuffle(np.ascontiguousarray(a, dtype=DTYPES[dtype])), None, b""

    def raw_bytes(self, dtype: str, count: int) -> int | None:
        return count * DTYPES[dtype].itemsize

    def decode(
        self, body: Buffer, encoded: EncodedTensor, shape: tuple[int, ...], count: int
    ) -> np.ndarray:
        if encoded.dtype == "bool":
            raw = np.frombuffer(body, dtype=np.uint8)
            if raw.size and raw.max() > 1:
                raise PayloadError("bool payload holds bytes other than 0 and 1")
        flat = _unshuffle(body, DTYPES[encoded.dtype], count)
        return flat.astype(flat.dtype.newbyteorder("="), copy=False).reshape(shape)


class Fp16Codec(_ZstdCodec):
    """Floating input, float16 on the wire (byte-shuffled), decodes to float32."""

    name = "fp16"

    def body(self, a: np.ndarray) -> tuple[str, bytes, dict[str, Any] | None, bytes]:
        _require_float(a, self.name)
        with np.errstate(over="ignore"):  # overflow is reported below, by count
            half = np.ascontiguousarray(a, dtype=DTYPES["float16"])
        if np.isinf(half).any():
            overflowed = int(np.count_nonzero(np.isinf(half) & np.isfinite(a)))
            if overflowed:
                raise CodecError(
                    f"fp16 overflow: {overflowed} finite values are beyond ±65504; use lossless"
                )
        return "float32", _shuffle(half), None, b""

    def raw_bytes(self, dtype: str, count: int) -> int | None:
        return 2 * count

    def decode(
        self, body: Buffer, encoded: EncodedTensor, shape: tuple[int, ...], count: int
    ) -> np.ndarray:
        return _unshuffle(body, DTYPES["float16"], count).astype(np.float32).reshape(shape)


class AffineCodec(_ZstdCodec):
    """Per-channel affine quantization along axis 0 to codes 0..`top`, decoding to float32.

    One code per byte, or two per byte when `packed` (int4: element 2i in the low nibble).
    """

    top: ClassVar[int]
    packed: ClassVar[bool] = False

    def body(self, a: np.ndarray) -> tuple[str, bytes, dict[str, Any] | None, bytes]:
        _require_float(a, self.name)
        channels = _channels(a.shape)
        per_channel = a.size // channels if channels else 0
        with np.errstate(over="ignore"):  # float64 beyond float32's range: refused just below
            x = np.asarray(a, dtype=np.float32).reshape(channels, per_channel)
        if x.shape[1] == 0:
            lo = hi = np.zeros(channels, dtype=np.float32)
        else:
            lo, hi = x.min(axis=1), x.max(axis=1)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise CodecError(
                f"{self.name} cannot carry NaN/Inf: {bad} values are NaN, ±Inf or beyond "
                "float32 range; use lossless or fp16"
            )
        param_dtype, scale, minimum = _affine_params(lo, hi, self.top)
        codes = _quantize(x, scale.astype(np.float32), minimum.astype(np.float32), self.top)
        body = _pack_nibbles(codes.reshape(-1)) if self.packed else codes.tobytes()
        params = scale.tobytes() + minimum.tobytes()
        return "float32", body, {"param_dtype": param_dtype}, params

    def params(self, quant: Mapping[str, Any] | None, shape: tuple[int, ...]) -> int:
        if not isinstance(quant, Mapping) or set(quant) != {"param_dtype"}:
            raise HeaderError(
                f"codec {self.name} needs quant {{'param_dtype': ...}}, got {quant!r}"
            )
        param_dtype = quant["param_dtype"]
        if not isinstance(param_dtype, str) or param_dtype not in PARAM_DTYPES:
            raise HeaderError(f"quant param_dtype must be float16 or float32, got {param_dtype!r}")
        return 2 * _channels(shape) * PARAM_DTYPES[param_dtype].itemsize

    def raw_bytes(self, dtype: str, count: int) -> int | None:
        return (count + 1) // 2 if self.packed else count

    def decode(
        self, body: Buffer, encoded: EncodedTensor, shape: tuple[int, ...], count: int
    ) -> np.ndarray:
        assert encoded.quant is not None  # check_layout guarantees it
        channels = _channels(shape)
        scale, minimum = _read_params(
            encoded.params, encoded.quant["param_dtype"], channels, self.top
        )
        if self.packed:
            codes = _unpack_nibbles(np.frombuffer(body, dtype=np.uint8), count)
        else:
            codes = np.frombuffer(body, dtype=np.uint8)
            if self.top < 255 and codes.size and int(codes.max()) > self.top:
                raise PayloadError(f"{self.name} body holds a code above {self.top}")
        per_channel = count // channels if channels else 0
        out = np.multiply(codes.reshape(channels, per_channel), scale[:, None], dtype=np.float32)
        out += minimum[:, None]
        return out.reshape(shape)


class Int8Codec(AffineCodec):
    name = "int8"
    top = 255


class Int5Codec(AffineCodec):
    # One code per byte: zstd's entropy stage squeezes the three unused top bits.
    name = "int5"
    top = 31


class Int4Codec(AffineCodec):
    name = "int4"
    top = 15
    packed = True


class ImageCodec(Codec):
    """A uint8 (H, W, 3) RGB image through Pillow; the body is the image file itself."""

    image = True
    decoded_dtypes = ("uint8",)
    pil_format: ClassVar[str]

    def encode(self, a: np.ndarray, *, jpeg_quality: int, zstd_level: int) -> EncodedTensor:
        quant, options = self.save_options(jpeg_quality)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
            raise CodecError(f"{self.name} takes a uint8 (H, W, 3) image, got {a.dtype} {a.shape}")
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(a)).save(buffer, format=self.pil_format, **options)
        body = buffer.getvalue()
        shape = tuple(int(n) for n in a.shape)
        return EncodedTensor(self.name, "uint8", shape, quant, b"", body, "none", len(body))

    def save_options(self, jpeg_quality: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(header quant, Pillow save options)."""
        raise NotImplementedError

    def structure(self, body: Buffer) -> ImageStructure:
        """Walk the container within its bounds, before Pillow sees it (schemas.imaging)."""
        raise NotImplementedError

    def decode(
        self, body: Buffer, encoded: EncodedTensor, shape: tuple[int, ...], count: int
    ) -> np.ndarray:
        height, width = shape[0], shape[1]
        name = self.pil_format
        # The container's own size, read without Pillow: an image header can claim any size.
        found = self.structure(body)
        if (found.width, found.height) != (width, height):
            raise ShapeMismatchError(
                f"{name} is {found.width}x{found.height}, header says {width}x{height} "
                f"(shape {shape})"
            )
        try:
            image = Image.open(io.BytesIO(body), formats=[name])
        except Exception as exc:  # Pillow raises many types on malformed input
            raise PayloadError(f"payload is not a {name} image: {exc}") from None
        if image.size != (width, height) or image.mode != "RGB":
            raise ShapeMismatchError(
                f"{name} is {image.mode} {image.size[0]}x{image.size[1]}, header says RGB "
                f"{width}x{height} (shape {shape})"
            )
        try:
            pixels = np.array(image.convert("RGB"), dtype=np.uint8)
        except Exception as exc:  # truncated or corrupt entropy-coded data
            raise PayloadError(f"corrupt {name} payload: {exc}") from None
        if pixels.shape != shape:
            raise ShapeMismatchError(f"{name} decoded to {pixels.shape}, header says {shape}")
        return pixels


class JpegCodec(ImageCodec):
    """Lossy: it changes the model's answer on some inputs (opt-in at split 0)."""

    name = "jpeg"
    pil_format = "JPEG"

    def save_options(self, jpeg_quality: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        quality = jpeg_quality
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise CodecError(f"jpeg quality must be an int in 1..100, got {quality!r}")
        return {"quality": quality}, {"quality": quality}

    def params(self, quant: Mapping[str, Any] | None, shape: tuple[int, ...]) -> int:
        if not isinstance(quant, Mapping) or set(quant) != {"quality"}:
            raise HeaderError(f"codec jpeg needs quant {{'quality': int}}, got {quant!r}")
        quality = quant["quality"]
        if not _is_int(quality) or not 1 <= quality <= 100:
            raise HeaderError(f"jpeg quality must be an integer in 1..100, got {quality!r}")
        return 0

    def structure(self, body: Buffer) -> ImageStructure:
        return jpeg_structure(body)


class WebpCodec(ImageCodec):
    """Lossless WebP: decodes to the very pixels that were sent (split 0's exact encoding)."""

    name = "webp"
    pil_format = "WEBP"
    exact = True

    def save_options(self, jpeg_quality: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        # Effort method 1, quality 0: measured on 224x224 photos, 3% larger than the smallest
        # setting (method 4) in a fifth of its encode time; the device pays that time per request.
        return None, {"lossless": True, "method": 1, "quality": 0, "exact": True}

    def structure(self, body: Buffer) -> ImageStructure:
        return webp_structure(body)


#: Every codec by its wire name, in the order of `CODECS`.
REGISTRY: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        LosslessCodec(),
        Fp16Codec(),
        Int8Codec(),
        Int5Codec(),
        Int4Codec(),
        JpegCodec(),
        WebpCodec(),
    )
}

CODECS = tuple(REGISTRY)
#: Codecs of a uint8 (H, W, 3) image (split 0) whose body is already compressed.
IMAGE_CODECS = tuple(name for name, codec in REGISTRY.items() if codec.image)
#: Encodings of split 0's uint8 image: lossless WebP (exact, the default), JPEG (lossy, opt-in)
#: and lossless (zstd of the raw pixels: exact, larger, far cheaper to encode than WebP).
INPUT_CODECS = ("webp", "jpeg", "lossless")
#: Codecs whose decoded tensor is bit-identical to the encoded one.
EXACT_CODECS = tuple(name for name, codec in REGISTRY.items() if codec.exact)
# Highest code of each quantizing codec: codes are integers in [0, top].
QUANT_TOP = {name: codec.top for name, codec in REGISTRY.items() if isinstance(codec, AffineCodec)}


def get_codec(name: str) -> Codec:
    """The codec called `name`; raises `UnknownCodecError` for any other name."""
    codec = REGISTRY.get(name) if isinstance(name, str) else None
    if codec is None:
        hint = did_you_mean(name, CODECS) if isinstance(name, str) else ""
        raise UnknownCodecError(f"unknown codec {name!r}{hint}; known: {', '.join(CODECS)}")
    return codec


# --------------------------------------------------------------------------------------------
# Encoding


def encode_tensor(
    array: Any,
    codec: str,
    *,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
) -> EncodedTensor:
    """Encode one per-sample tensor with `codec`; raises `CodecError` when it cannot."""
    chosen = get_codec(codec)
    return chosen.encode(np.asarray(array), jpeg_quality=jpeg_quality, zstd_level=zstd_level)


def _dtype_name(a: np.ndarray) -> str:
    name = a.dtype.name
    if name not in DTYPES:
        raise CodecError(f"dtype {a.dtype} is not supported; supported: {', '.join(DTYPES)}")
    return name


def _require_float(a: np.ndarray, codec: str) -> None:
    if a.dtype.name not in FLOAT_DTYPES:
        raise CodecError(f"codec {codec} takes a floating array, got {a.dtype}; use lossless")


def _shuffle(le: np.ndarray) -> bytes:
    """Byte planes of a little-endian array: all byte 0s, then all byte 1s, ...

    Floats' exponent bytes are alike, so grouping them lets zstd find the redundancy.
    """
    flat = le.reshape(-1)
    size = flat.dtype.itemsize
    if size == 1:
        return flat.tobytes()
    return flat.view(np.uint8).reshape(flat.size, size).T.tobytes()


def _channels(shape: tuple[int, ...]) -> int:
    """Quantization channels: axis 0 of the per-sample tensor (a scalar is one channel)."""
    return shape[0] if shape else 1


def _affine_params(lo: np.ndarray, hi: np.ndarray, top: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Per-channel (scale, minimum), rounded to the wire dtype so that `minimum <= lo` and
    `minimum + top * scale >= hi`: the codes cover every value, and encoder and decoder use
    the same rounded numbers. float16 unless it overflows or widens a step noticeably."""
    ideal = (hi.astype(np.float64) - lo) / top
    for name in ("float16", "float32"):
        with np.errstate(over="ignore"):  # an overflowing dtype is skipped just below
            minimum, scale = _rounded_params(lo, hi, top, PARAM_DTYPES[name])
        if not _decodable(scale, minimum, top):
            continue
        if name == "float16" and not _steps_close(scale, ideal):
            continue
        return name, scale, minimum
    raise CodecError("a channel's value range does not fit float32 quantization parameters")


def _decodable(scale: np.ndarray, minimum: np.ndarray, top: int) -> bool:
    """True if the parameters are finite and the top code decodes to a finite float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        highest = np.float32(top) * scale.astype(np.float32) + minimum.astype(np.float32)
    return bool(np.isfinite(highest).all() and np.isfinite(minimum).all())


def _rounded_params(
    lo: np.ndarray, hi: np.ndarray, top: int, dtype: np.dtype[Any]
) -> tuple[np.ndarray, np.ndarray]:
    minimum = _round_down(lo, dtype)
    span = hi.astype(np.float64) - minimum.astype(np.float64)
    return minimum, _round_up(span / top, dtype)


def _round_down(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    rounded = values.astype(dtype)
    too_high = rounded.astype(np.float64) > values
    return np.where(too_high, np.nextafter(rounded, dtype.type(-np.inf)), rounded).astype(dtype)


def _round_up(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    rounded = values.astype(dtype)
    too_low = rounded.astype(np.float64) < values
    return np.where(too_low, np.nextafter(rounded, dtype.type(np.inf)), rounded).astype(dtype)


def _steps_close(scale: np.ndarray, ideal: np.ndarray) -> bool:
    step = scale.astype(np.float64)
    return bool(np.all((step <= ideal * (1 + _F16_STEP_SLACK)) | (step <= _F16_TINY_STEP)))


def _quantize(x: np.ndarray, scale: np.ndarray, minimum: np.ndarray, top: int) -> np.ndarray:
    # A constant channel has scale 0: every code is 0 and decodes to the minimum.
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    np.minimum(inverse, np.finfo(np.float32).max, out=inverse)  # 1 / subnormal stays finite
    q = x - minimum[:, None]
    q *= inverse[:, None]
    np.rint(q, out=q)
    np.clip(q, 0, top, out=q)
    return q.astype(np.uint8)


def _pack_nibbles(codes: np.ndarray) -> bytes:
    """Two 4-bit codes per byte: element 2i in the low nibble, 2i+1 in the high nibble."""
    if codes.size % 2:
        codes = np.append(codes, np.uint8(0))
    return (codes[0::2] | (codes[1::2] << 4)).tobytes()


# --------------------------------------------------------------------------------------------
# Layout: what the declared codec, dtype and shape imply, checked before any payload is read


@dataclass(frozen=True)
class Layout:
    """Sizes implied by a tensor's declaration. `raw_bytes` is None for images (not derivable)."""

    count: int
    decoded_bytes: int
    params_bytes: int
    raw_bytes: int | None


def describe(shape: tuple[int, ...], dtype: str, codec: str) -> str:
    """Human-readable tensor declaration for error messages: "shape (192, 7, 7) int8"."""
    return f"shape {tuple(shape)} {codec if codec != 'lossless' else dtype}"


def check_layout(
    *,
    codec: str,
    dtype: str,
    shape: tuple[int, ...],
    compression: str,
    quant: Mapping[str, Any] | None,
    raw_bytes: int,
    params_bytes: int,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    max_ndim: int = DEFAULT_MAX_NDIM,
) -> Layout:
    """Validate a tensor's declaration (no payload needed) and return the sizes it implies."""
    chosen = get_codec(codec)
    if compression not in COMPRESSIONS:
        raise HeaderError(f"unknown compression {compression!r}; known: zstd, none")
    _check_shape(shape, max_ndim)
    _check_dtype(dtype, chosen)
    if chosen.image and (len(shape) != 3 or shape[2] != 3 or 0 in shape):
        raise ShapeMismatchError(f"{codec} carries a (H, W, 3) image with H, W >= 1, got {shape}")
    count = math.prod(shape)
    decoded = count * DTYPES[dtype].itemsize
    if decoded > max_tensor_bytes:
        raise LimitExceededError(
            f"shape {shape} {dtype} decodes to {decoded} bytes, over the limit of "
            f"{max_tensor_bytes}"
        )
    params_needed = chosen.params(quant, shape)
    if params_bytes != params_needed:
        raise LengthMismatchError(
            f"params section is {params_bytes} bytes, {describe(shape, dtype, codec)} "
            f"needs {params_needed}"
        )
    expected_raw = chosen.raw_bytes(dtype, count)
    _check_raw_bytes(raw_bytes, expected_raw, shape, dtype, codec, max_tensor_bytes)
    return Layout(count, decoded, params_needed, expected_raw)


def _check_shape(shape: Any, max_ndim: int) -> None:
    if not isinstance(shape, tuple) or not all(_is_int(n) and n >= 0 for n in shape):
        raise HeaderError(f"shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > max_ndim:
        raise LimitExceededError(f"shape {shape} has {len(shape)} dimensions, limit {max_ndim}")


def _check_dtype(dtype: str, codec: Codec) -> None:
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise HeaderError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    allowed = codec.decoded_dtypes
    if dtype not in allowed:
        raise HeaderError(
            f"codec {codec.name} decodes to {' or '.join(allowed)}, header says {dtype}"
        )


def _check_raw_bytes(
    raw_bytes: int,
    expected: int | None,
    shape: tuple[int, ...],
    dtype: str,
    codec: str,
    max_tensor_bytes: int,
) -> None:
    if not _is_int(raw_bytes) or raw_bytes < 0:
        raise HeaderError(f"raw_bytes must be a non-negative integer, got {raw_bytes!r}")
    if expected is None:  # jpeg, webp: any non-empty body up to the limit
        if raw_bytes > max_tensor_bytes:
            raise LimitExceededError(
                f"{codec} body of {raw_bytes} bytes is over the limit of {max_tensor_bytes}"
            )
        if raw_bytes == 0:
            raise LengthMismatchError(f"{codec} body is empty")
    elif raw_bytes != expected:
        raise LengthMismatchError(
            f"raw_bytes is {raw_bytes}, {describe(shape, dtype, codec)} needs {expected}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Decoding


def decode_tensor(
    encoded: EncodedTensor,
    *,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    max_ndim: int = DEFAULT_MAX_NDIM,
) -> np.ndarray:
    """Decode a tensor, validating every size first; raises a `FrameError` subclass.

    The result is a new, writable, native-endian array of `encoded.shape`.
    """
    shape = tuple(encoded.shape) if isinstance(encoded.shape, (tuple, list)) else encoded.shape
    layout = check_layout(
        codec=encoded.codec,
        dtype=encoded.dtype,
        shape=shape,
        compression=encoded.compression,
        quant=encoded.quant,
        raw_bytes=encoded.raw_bytes,
        params_bytes=len(encoded.params),
        max_tensor_bytes=max_tensor_bytes,
        max_ndim=max_ndim,
    )
    body = _body(encoded, shape)
    return REGISTRY[encoded.codec].decode(body, encoded, shape, layout.count)


def _body(encoded: EncodedTensor, shape: tuple[int, ...]) -> Buffer:
    """The codec body: the payload itself, or its zstd decompression bounded by raw_bytes."""
    payload = encoded.payload
    if encoded.compression == "none":
        if len(payload) != encoded.raw_bytes:
            raise LengthMismatchError(
                f"payload is {len(payload)} bytes, "
                f"{describe(shape, encoded.dtype, encoded.codec)} needs {encoded.raw_bytes}"
            )
        return payload
    return _decompress(payload, encoded.raw_bytes)


def _decompress(payload: Buffer, raw_bytes: int) -> bytes:
    # The zstd frame must declare its content size, equal to raw_bytes (already checked
    # against the limit): zstd then refuses to produce more, so a "zstd bomb" cannot expand.
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"payload is not a zstd frame: {exc}") from None
    if declared == -1:
        raise PayloadError("zstd frame does not declare its content size (required)")
    if declared != raw_bytes:
        raise LengthMismatchError(
            f"zstd frame declares {declared} decompressed bytes, header raw_bytes is {raw_bytes}"
        )
    inflater = _decompressor().decompressobj()
    try:
        body = inflater.decompress(payload)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"corrupt zstd payload: {exc}") from None
    if not inflater.eof:
        raise PayloadError("zstd payload ends before its frame does")
    if inflater.unused_data:
        raise LengthMismatchError(f"{len(inflater.unused_data)} bytes follow the zstd frame")
    if len(body) != raw_bytes:
        raise LengthMismatchError(f"zstd payload holds {len(body)} bytes, expected {raw_bytes}")
    return body


def _unshuffle(body: Buffer, dtype: np.dtype[Any], count: int) -> np.ndarray:
    size = dtype.itemsize
    planes = np.frombuffer(body, dtype=np.uint8)
    if size == 1:
        return planes.view(dtype).copy()
    return planes.reshape(size, count).T.copy().view(dtype).reshape(count)


def _read_params(
    params: Buffer, param_dtype: str, channels: int, top: int
) -> tuple[np.ndarray, np.ndarray]:
    values = np.frombuffer(params, dtype=PARAM_DTYPES[param_dtype]).astype(np.float32)
    scale, minimum = values[:channels], values[channels:]
    if not ((scale >= 0).all() and _decodable(scale, minimum, top)):
        raise PayloadError(
            "quantization parameters must be finite, with scale >= 0 and the top code "
            "decoding to a finite float32"
        )
    return scale, minimum


def _unpack_nibbles(packed: np.ndarray, count: int) -> np.ndarray:
    codes = np.empty(2 * packed.size, dtype=np.uint8)
    codes[0::2] = packed & 0x0F
    codes[1::2] = packed >> 4
    if codes.size > count and codes[count] != 0:
        raise PayloadError("int4 padding nibble (high nibble of the last byte) must be 0")
    return codes[:count]


# --------------------------------------------------------------------------------------------
# zstd contexts: not thread-safe, so one per thread and level


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        # Content size: lets the decoder bound decompression. Checksum: 4 bytes that turn a
        # corrupted payload into an error instead of a silently different tensor.
        cache[level] = zstandard.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=True
        )
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    decompressor: zstandard.ZstdDecompressor = _local.decompressor
    return decompressor
