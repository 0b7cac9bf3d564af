"""The binary tensor frame: one request = one sample's tensor plus its routing header.

Layout (all integers little-endian; FORMAT.md has the byte-level specification):

    offset 0   4 bytes  magic b"SMQF"
    offset 4   u8       version (1)
    offset 5   u8       flags (0; reserved)
    offset 6   u16      reserved (0)
    offset 8   u32      header_len   (UTF-8 JSON object)
    offset 12  u32      params_len   (binary codec parameters: int8/int5/int4 scales, minimums)
    offset 16  u32      payload_len  (codec body, zstd-compressed unless compression is "none")
    offset 20  header, then params, then payload; the frame ends exactly there.

`decode_frame` validates every byte before it trusts it and raises a `FrameError` subclass that
names the problem; it never allocates more than the limits allow.
"""

from __future__ import annotations

import json
import math
import numbers
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.codecs import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_NDIM,
    DEFAULT_MAX_TENSOR_BYTES,
    DEFAULT_ZSTD_LEVEL,
    EncodedTensor,
    check_layout,
    decode_tensor,
    encode_tensor,
)
from schemas.errors import (
    BadMagicError,
    FingerprintMismatchError,
    HeaderError,
    LengthMismatchError,
    LimitExceededError,
    ModelInfoError,
    OversizedFrameError,
    ShapeMismatchError,
    TruncatedFrameError,
    UncataloguedModelError,
    UnknownSplitError,
    UnsupportedVersionError,
)

MAGIC = b"SMQF"
VERSION = 1
PREAMBLE = struct.Struct("<4sBBHIII")
PREAMBLE_SIZE = PREAMBLE.size  # 20

Buffer = bytes | bytearray | memoryview

# Bounds on every header value (FORMAT.md, "Header bounds"): what arrives is never trusted.
MAX_HEADER_INT = 2**53 - 1  # integers a JSON double holds exactly; larger ones are refused
MAX_ID_CHARS = 128  # request_id, device_id
MAX_NAME_CHARS = 64  # model, fingerprint, codec, dtype, compression, timestamp names
MAX_TIMESTAMPS = 16  # entries in the timestamps object
MAX_TIMESTAMP_S = 1e12  # |seconds| of one timestamp (unix time is ~1.8e9)
MAX_DEADLINE_MS = 86_400_000.0  # one day
# The `timestamps` entry a device sets to its wall clock (Unix seconds) as it publishes: with
# `deadline_ms` it dates the request's absolute deadline (FORMAT.md, "Deadlines").
SENT_TIMESTAMP = "sent"
# The default frame limit (FORMAT.md, "Limits"): every built-in model up to 300 px input sends
# at most ~3.5 MiB (efficientnet_b3's first split, float32 under the lossless codec), so 4 MiB
# fits them with room; a site whose models send more raises it, at the worker and the broker.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
# Room for a frame's preamble, JSON header (every string and the 16 timestamps at their maxima
# stay under 7 KiB) and codec parameters, in `frame_size_bound`.
FRAME_OVERHEAD_BOUND = 8 * 1024


@dataclass(frozen=True)
class FrameLimits:
    """What a decoder accepts at most; every declared size is checked before use."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_header_bytes: int = 64 * 1024
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    max_ndim: int = DEFAULT_MAX_NDIM


@dataclass(frozen=True)
class ModelInfo:
    """What a decoder knows of a model: `split_shapes[k]` is the per-sample shape sent at split
    k (k = 0: the (S, S, 3) image; k = n: `()`, never sent)."""

    name: str
    fingerprint: str
    split_shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        shapes = tuple(tuple(int(d) for d in shape) for shape in self.split_shapes)
        object.__setattr__(self, "split_shapes", shapes)
        if not shapes:
            raise ModelInfoError("ModelInfo.split_shapes needs at least split 0")

    @property
    def n(self) -> int:
        """Number of blocks: splits 0..n exist, 0..n-1 are sent."""
        return len(self.split_shapes) - 1


@dataclass(frozen=True)
class FrameHeader:
    """The frame's JSON header, validated. Field names are the JSON keys."""

    request_id: str
    model: str
    fingerprint: str
    split: int
    codec: str
    dtype: str
    shape: tuple[int, ...]
    compression: str
    quant: Mapping[str, Any] | None
    raw_bytes: int
    device_id: str
    timestamps: dict[str, float] = field(default_factory=dict)
    deadline_ms: float | None = None


@dataclass(frozen=True)
class Frame:
    """A decoded frame: the header and the per-sample tensor (writable, native-endian)."""

    header: FrameHeader
    tensor: np.ndarray


_DEFAULT_LIMITS = FrameLimits()


# --------------------------------------------------------------------------------------------
# Encoding


def encode_frame(
    tensor: Any,
    *,
    codec: str,
    request_id: str,
    model: str,
    fingerprint: str,
    split: int,
    device_id: str = "",
    timestamps: Mapping[str, float] | None = None,
    deadline_ms: float | None = None,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> bytes:
    """Encode one per-sample tensor (no batch dimension) into a frame.

    Raises `CodecError` when the codec cannot take the tensor, `HeaderError` for a bad field.
    """
    encoded = encode_tensor(tensor, codec, jpeg_quality=jpeg_quality, zstd_level=zstd_level)
    fields: dict[str, Any] = {
        "request_id": request_id,
        "model": model,
        "fingerprint": fingerprint,
        "split": _as_int(split),
        "codec": encoded.codec,
        "dtype": encoded.dtype,
        "shape": list(encoded.shape),
        "compression": encoded.compression,
        "quant": dict(encoded.quant) if encoded.quant is not None else None,
        "raw_bytes": encoded.raw_bytes,
        "device_id": device_id,
        "timestamps": {key: _as_float(value) for key, value in (timestamps or {}).items()},
        "deadline_ms": _as_float(deadline_ms),
    }
    _header_from_fields(fields)  # the encoder refuses what the decoder would refuse
    blob = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    preamble = PREAMBLE.pack(
        MAGIC, VERSION, 0, 0, len(blob), len(encoded.params), len(encoded.payload)
    )
    return b"".join((preamble, blob, encoded.params, encoded.payload))


def _as_int(value: Any) -> Any:
    """numpy integers become ints; anything else is left for the validator to name."""
    return (
        int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    )


def _as_float(value: Any) -> Any:
    """numpy floats and ints become floats; anything else is left for the validator to name."""
    return (
        float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
    )


def zstd_bound(size: int) -> int:
    """zstd's worst-case output for `size` input bytes (ZSTD_COMPRESSBOUND)."""
    small = ((128 << 10) - size) >> 11 if size < (128 << 10) else 0
    return size + (size >> 8) + small


def frame_size_bound(shape: tuple[int, ...], itemsize: int) -> int:
    """The most bytes a frame of one sample of `shape` can take under the zstd-compressed
    codecs: the lossless codec's zstd of the raw `itemsize`-byte values is the largest body
    (int8/int5/int4 and fp16 send fewer bytes per value)."""
    return FRAME_OVERHEAD_BOUND + zstd_bound(itemsize * math.prod(shape))


# Split 0's image bound per pixel channel: lossless WebP or JPEG of noise can outgrow the raw
# bytes, so twice them (an image is never a model's largest split: 3 bytes a pixel against
# float32 feature maps of tens of channels).
IMAGE_BYTES_PER_VALUE = 2


def largest_frame_bytes(info: ModelInfo) -> int:
    """The most bytes a frame of `info`'s model can take at any split it sends: the uint8 image
    at split 0, float32 tensors at the inner splits (split n sends nothing)."""
    shapes = info.split_shapes[:-1]
    return max(
        frame_size_bound(shape, IMAGE_BYTES_PER_VALUE if k == 0 else 4)
        for k, shape in enumerate(shapes)
    )


# --------------------------------------------------------------------------------------------
# Decoding


def peek_header(
    data: Buffer,
    *,
    limits: FrameLimits = _DEFAULT_LIMITS,
    catalog: Mapping[str, ModelInfo] | None = None,
) -> FrameHeader:
    """Validate the preamble and the header (and the catalog, if given) without touching the
    payload's contents: cheap, for routing and error replies."""
    header, _, _ = _open(data, limits, catalog)
    return header


def decode_frame(
    data: Buffer,
    *,
    limits: FrameLimits = _DEFAULT_LIMITS,
    catalog: Mapping[str, ModelInfo] | None = None,
) -> Frame:
    """Decode and validate a whole frame; raises a `FrameError` subclass naming the problem."""
    return _decode_opened(*_open(data, limits, catalog), limits)


def decode_frame_unless(
    data: Buffer,
    codecs: Collection[str],
    *,
    limits: FrameLimits = _DEFAULT_LIMITS,
    catalog: Mapping[str, ModelInfo] | None = None,
) -> Frame | None:
    """`decode_frame`, or None when the validated header names one of `codecs`: then nothing
    past the header was decoded (the caller decodes it elsewhere, e.g. under a CPU budget)."""
    header, params, payload = _open(data, limits, catalog)
    if header.codec in codecs:
        return None
    return _decode_opened(header, params, payload, limits)


def _decode_opened(
    header: FrameHeader, params: memoryview, payload: memoryview, limits: FrameLimits
) -> Frame:
    encoded = EncodedTensor(
        codec=header.codec,
        dtype=header.dtype,
        shape=header.shape,
        quant=header.quant,
        params=params,
        payload=payload,
        compression=header.compression,
        raw_bytes=header.raw_bytes,
    )
    tensor = decode_tensor(
        encoded, max_tensor_bytes=limits.max_tensor_bytes, max_ndim=limits.max_ndim
    )
    return Frame(header=header, tensor=tensor)


def _open(
    data: Buffer, limits: FrameLimits, catalog: Mapping[str, ModelInfo] | None
) -> tuple[FrameHeader, memoryview, memoryview]:
    """Split the frame into validated header, params and payload (views, no copies)."""
    view = memoryview(data).cast("B")
    header_len, params_len, payload_len = _read_preamble(view, limits)
    header_end = PREAMBLE_SIZE + header_len
    params_end = header_end + params_len
    header = _parse_header(view[PREAMBLE_SIZE:header_end])
    if catalog is not None:
        _check_catalog(header, catalog)
    check_layout(
        codec=header.codec,
        dtype=header.dtype,
        shape=header.shape,
        compression=header.compression,
        quant=header.quant,
        raw_bytes=header.raw_bytes,
        params_bytes=params_len,
        max_tensor_bytes=limits.max_tensor_bytes,
        max_ndim=limits.max_ndim,
    )
    return header, view[header_end:params_end], view[params_end : params_end + payload_len]


def _read_preamble(view: memoryview, limits: FrameLimits) -> tuple[int, int, int]:
    size = len(view)
    if size > limits.max_frame_bytes:
        raise OversizedFrameError(
            f"frame is {size} bytes, over the limit of {limits.max_frame_bytes}"
        )
    start = bytes(view[:4])
    if start != MAGIC[: len(start)]:
        raise BadMagicError(f"frame starts with {start!r}, not {MAGIC!r}")
    if size >= 5 and view[4] != VERSION:
        raise UnsupportedVersionError(f"frame version {view[4]}, this decoder reads {VERSION}")
    if size < PREAMBLE_SIZE:
        raise TruncatedFrameError(f"frame is {size} bytes, the preamble alone needs 20")
    _, _, flags, reserved, header_len, params_len, payload_len = PREAMBLE.unpack_from(view)
    if flags or reserved:
        raise HeaderError(f"preamble flags {flags} / reserved {reserved} must be 0 in version 1")
    if header_len > limits.max_header_bytes:
        raise LimitExceededError(
            f"header_len {header_len} is over the limit of {limits.max_header_bytes}"
        )
    declared = PREAMBLE_SIZE + header_len + params_len + payload_len
    if size < declared:
        raise TruncatedFrameError(
            f"frame is {size} bytes, its preamble declares {declared} (20 + header "
            f"{header_len} + params {params_len} + payload {payload_len})"
        )
    if size > declared:
        raise LengthMismatchError(
            f"frame is {size} bytes, its preamble declares {declared}: "
            f"{size - declared} trailing bytes"
        )
    return header_len, params_len, payload_len


# --------------------------------------------------------------------------------------------
# Header JSON


def _parse_header(raw: memoryview) -> FrameHeader:
    try:
        text = bytes(raw).decode("utf-8")
        fields = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise HeaderError(f"header is not UTF-8: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise HeaderError(f"header is not valid JSON: {exc}") from None
    return _header_from_fields(fields)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        raise HeaderError(f"header repeats key(s) {', '.join(duplicates)}")
    return result


def _no_constants(name: str) -> Any:
    raise HeaderError(f"header contains {name}, which is not JSON")


def _is_int(value: Any) -> bool:
    """A JSON integer within +-MAX_HEADER_INT (a 400-digit integer is not a count of anything,
    and converting it to float raises OverflowError)."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_HEADER_INT


def _is_number(value: Any) -> bool:
    return (isinstance(value, float) and math.isfinite(value)) or _is_int(value)


def _short(value: Any, limit: int) -> str:
    """A value for an error message: long strings cut, so a reply never echoes megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _is_text(value: Any, max_chars: int) -> bool:
    """A string of at most `max_chars` that is valid Unicode (JSON's "\\ud800" escape yields a
    lone surrogate, which no UTF-8 reply can carry)."""
    if not isinstance(value, str) or len(value) > max_chars:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(name: str, *, nonempty: bool, max_chars: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not _is_text(value, max_chars) or (nonempty and not value):
            wanted = "a non-empty string" if nonempty else "a string"
            raise HeaderError(
                f"header field {name} must be {wanted} of valid Unicode, at most {max_chars} "
                f"characters, got {_short(value, 80)}"
            )
        return str(value)

    return check


def _count(name: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not _is_int(value) or value < 0:
            raise HeaderError(
                f"header field {name} must be an integer in 0..{MAX_HEADER_INT}, "
                f"got {_short(value, 80)}"
            )
        return int(value)

    return check


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(_is_int(n) and n >= 0 for n in value):
        raise HeaderError(
            f"header field shape must be a list of integers in 0..{MAX_HEADER_INT}, "
            f"got {_short(value, 80)}"
        )
    return tuple(value)


def _quant(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise HeaderError(f"header field quant must be an object or null, got {value!r}")
    return value


def _timestamps(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_TIMESTAMPS:
        raise HeaderError(
            f"header field timestamps must be an object of at most {MAX_TIMESTAMPS} entries, "
            f"got {_short(value, 80)}"
        )
    for key, seconds in value.items():
        in_range = _is_number(seconds) and abs(seconds) <= MAX_TIMESTAMP_S
        if not key or not _is_text(key, MAX_NAME_CHARS) or not in_range:
            raise HeaderError(
                f"timestamps maps event names (1..{MAX_NAME_CHARS} characters) to finite "
                f"seconds within +-{MAX_TIMESTAMP_S:g}, got {_short(key, 40)}: "
                f"{_short(seconds, 40)}"
            )
    return {key: float(seconds) for key, seconds in value.items()}


def _deadline(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or not 0 < value <= MAX_DEADLINE_MS:
        raise HeaderError(
            f"deadline_ms must be a number in (0, {MAX_DEADLINE_MS}] or null, "
            f"got {_short(value, 80)}"
        )
    return float(value)


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "request_id": _text("request_id", nonempty=True, max_chars=MAX_ID_CHARS),
    "model": _text("model", nonempty=True, max_chars=MAX_NAME_CHARS),
    "fingerprint": _text("fingerprint", nonempty=False, max_chars=MAX_NAME_CHARS),
    "split": _count("split"),
    # An empty codec name is an unknown codec (`unknown_codec`, from the layout check).
    "codec": _text("codec", nonempty=False, max_chars=MAX_NAME_CHARS),
    "dtype": _text("dtype", nonempty=True, max_chars=MAX_NAME_CHARS),
    "shape": _shape,
    "compression": _text("compression", nonempty=True, max_chars=MAX_NAME_CHARS),
    "quant": _quant,
    "raw_bytes": _count("raw_bytes"),
    "device_id": _text("device_id", nonempty=False, max_chars=MAX_ID_CHARS),
    "timestamps": _timestamps,
    "deadline_ms": _deadline,
}


def _header_from_fields(fields: Any) -> FrameHeader:
    if not isinstance(fields, dict):
        raise HeaderError(f"header must be a JSON object, got {type(fields).__name__}")
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise HeaderError(f"header lacks field(s): {', '.join(missing)}")
    unknown = sorted(str(name) for name in fields if name not in _FIELDS)
    if unknown:
        raise HeaderError(f"header has unknown field(s): {', '.join(unknown)}")
    return FrameHeader(**{name: check(fields[name]) for name, check in _FIELDS.items()})


# --------------------------------------------------------------------------------------------
# Catalog


def _check_catalog(header: FrameHeader, catalog: Mapping[str, ModelInfo]) -> None:
    info = catalog.get(header.model)
    if info is None:
        served = ", ".join(sorted(catalog)) or "none"
        raise UncataloguedModelError(f"unknown model {header.model!r}; known: {served}")
    if header.fingerprint != info.fingerprint:
        raise FingerprintMismatchError(
            f"model {header.model} fingerprint {header.fingerprint!r} does not match "
            f"{info.fingerprint!r}: the two sides run different weights or blocks"
        )
    if not header.split < info.n:
        raise UnknownSplitError(
            f"split {header.split} is outside 0..{info.n - 1} for {header.model} "
            f"(split {info.n} runs on the device and is never sent)"
        )
    expected = info.split_shapes[header.split]
    if header.shape != expected:
        raise ShapeMismatchError(
            f"split {header.split} of {header.model} carries shape {expected}, "
            f"frame has {header.shape}"
        )
