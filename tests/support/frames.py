"""Frame building by hand, from FORMAT.md alone (struct + json), independent of encode_frame.

The one frame builder of the tests: the format tests build valid and lying frames with it, and
the poison and fuzz tests rebuild encoded frames around edited headers."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import zstandard

PREAMBLE = "<4sBBHIII"  # FORMAT.md section 2
PREAMBLE_SIZE = struct.calcsize(PREAMBLE)


def header_fields(**overrides: Any) -> dict[str, Any]:
    """A valid header for a lossless float32 tensor of shape (2, 3); override any key."""
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "model": "toy",
        "fingerprint": "00112233aabbccdd",
        "split": 1,
        "codec": "lossless",
        "dtype": "float32",
        "shape": [2, 3],
        "compression": "none",
        "quant": None,
        "raw_bytes": 24,
        "device_id": "dev-1",
        "timestamps": {"sent": 12.5},
        "deadline_ms": 250.0,
    }
    fields.update(overrides)
    return fields


def build_frame(
    fields: dict[str, Any] | str | bytes,
    params: bytes = b"",
    payload: bytes = b"",
    *,
    magic: bytes = b"SMQF",
    version: int = 1,
    flags: int = 0,
    reserved: int = 0,
    header_len: int | None = None,
    params_len: int | None = None,
    payload_len: int | None = None,
) -> bytes:
    """Preamble + header + params + payload; any declared length can be overridden to lie.

    The header is JSON of `fields`, or raw header text as given (a str is ASCII, so JSON escapes
    keep lone surrogates expressible)."""
    if isinstance(fields, bytes):
        header = fields
    elif isinstance(fields, str):
        header = fields.encode("ascii")
    else:
        header = json.dumps(fields).encode("utf-8")
    preamble = struct.pack(
        PREAMBLE,
        magic,
        version,
        flags,
        reserved,
        len(header) if header_len is None else header_len,
        len(params) if params_len is None else params_len,
        len(payload) if payload_len is None else payload_len,
    )
    return preamble + header + params + payload


def split_frame(frame: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """(header fields, params, payload) of a well-formed frame."""
    _, _, _, _, header_len, params_len, _ = struct.unpack_from(PREAMBLE, frame)
    header_end = PREAMBLE_SIZE + header_len
    header = json.loads(frame[PREAMBLE_SIZE:header_end])
    return header, frame[header_end : header_end + params_len], frame[header_end + params_len :]


def shuffled(values: np.ndarray) -> bytes:
    """FORMAT.md 5.2 written out: plane b holds byte b of every element (little-endian)."""
    flat = values.reshape(-1)
    raw = flat.tobytes()
    size = flat.dtype.itemsize
    return bytes(raw[i * size + b] for b in range(size) for i in range(flat.size))


def zstd(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(body)
