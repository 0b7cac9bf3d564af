"""FORMAT.md is the specification: frames built from it by hand (struct + json, never
encode_frame) must decode to the values its formulas give, and its worked example must be
exactly what the encoder produces today."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from schemas.frame import decode_frame, encode_frame
from tests.support.frames import build_frame, header_fields, shuffled, zstd

FORMAT_MD = Path(__file__).resolve().parents[2] / "schemas" / "FORMAT.md"


def _worked_example() -> bytes:
    """The hex dump of section 9, read out of FORMAT.md."""
    text = FORMAT_MD.read_text(encoding="utf-8")
    section = text[text.index("## 9. Worked example") : text.index("## 10.")]
    dump = section[section.index("```") + 3 :]
    dump = dump[: dump.index("```")]
    data = bytearray()
    for line in dump.splitlines():
        match = re.match(r"^([0-9a-f]{4})  ((?:[0-9a-f]{2} ?){1,16})", line)
        if match:
            assert int(match.group(1), 16) == len(data), "offsets in the dump are continuous"
            data += bytes.fromhex(match.group(2))
    return bytes(data)


def test_worked_example_decodes_as_documented() -> None:
    data = _worked_example()
    assert len(data) == 310
    magic, version, flags, reserved, header_len, params_len, payload_len = struct.unpack_from(
        "<4sBBHIII", data
    )
    assert (magic, version, flags, reserved) == (b"SMQF", 1, 0, 0)
    assert (header_len, params_len, payload_len) == (263, 8, 19)
    frame = decode_frame(data)
    assert frame.header.request_id == "r1" and frame.header.split == 1
    assert frame.header.quant == {"param_dtype": "float16"}
    expected = np.array([[0.0, 0.49851608, 1.0009575], [-1.0, -1.0, -1.0]], dtype=np.float32)
    np.testing.assert_allclose(frame.tensor, expected, rtol=0, atol=1e-7)


def test_worked_example_is_what_the_encoder_writes() -> None:
    tensor = np.array([[0.0, 0.5, 1.0], [-1.0, -1.0, -1.0]], dtype=np.float32)
    produced = encode_frame(
        tensor,
        codec="int8",
        request_id="r1",
        model="m",
        fingerprint="0123456789abcdef",
        split=1,
        device_id="d1",
        timestamps={"sent": 1700000000.25},
        deadline_ms=500,
    )
    assert produced == _worked_example(), "FORMAT.md section 9 is out of date"


def test_encoder_follows_the_documented_offsets() -> None:
    raw = encode_frame(
        np.ones((3, 4), np.float32),
        codec="int4",
        request_id="x",
        model="m",
        fingerprint="f",
        split=2,
    )
    assert raw[0:4] == b"SMQF" and raw[4] == 1 and raw[5] == 0 and raw[6:8] == b"\0\0"
    header_len, params_len, payload_len = (
        int.from_bytes(raw[i : i + 4], "little") for i in (8, 12, 16)
    )
    assert 20 + header_len + params_len + payload_len == len(raw)
    header = json.loads(raw[20 : 20 + header_len].decode("utf-8"))
    assert list(header) == [
        "request_id",
        "model",
        "fingerprint",
        "split",
        "codec",
        "dtype",
        "shape",
        "compression",
        "quant",
        "raw_bytes",
        "device_id",
        "timestamps",
        "deadline_ms",
    ]
    assert params_len == 2 * 3 * 2  # C = 3 float16 scales + 3 float16 minimums
    assert header["raw_bytes"] == 6  # ceil(12 / 2)
    payload = raw[20 + header_len + params_len :]
    assert payload[:4] == bytes.fromhex("28b52ffd")  # one zstd frame


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "int64", "uint8", "bool"])
def test_hand_built_lossless(dtype: str, compression: str) -> None:
    ramp = np.arange(-6, 6)
    source = {"uint8": ramp * 20 + 120, "bool": ramp % 3 == 0}.get(dtype, ramp * 1000.5)
    values = np.asarray(source).astype(dtype).reshape(3, 4)
    body = shuffled(values.astype(np.dtype(dtype).newbyteorder("<")))
    payload = body if compression == "none" else zstd(body)
    fields = header_fields(dtype=dtype, shape=[3, 4], raw_bytes=len(body), compression=compression)
    frame = decode_frame(build_frame(fields, payload=payload))
    assert frame.tensor.dtype.name == dtype
    assert np.array_equal(frame.tensor, values)


def test_hand_built_fp16() -> None:
    halves = np.array([1.0, -2.5, 65504.0, np.inf, np.nan, 6e-8], dtype="<f2")
    body = shuffled(halves)
    fields = header_fields(codec="fp16", shape=[6], raw_bytes=12, compression="zstd")
    decoded = decode_frame(build_frame(fields, payload=zstd(body))).tensor
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, halves.astype(np.float32))


def test_hand_built_int8_scalar_with_the_formula() -> None:
    # shape [] is one channel of one element.
    params = struct.pack("<ee", 0.25, -3.0)
    fields = header_fields(codec="int8", shape=[], raw_bytes=1, quant={"param_dtype": "float16"})
    decoded = decode_frame(build_frame(fields, params=params, payload=bytes([200]))).tensor
    assert decoded.shape == () and float(decoded) == 200 * 0.25 - 3.0


def test_hand_built_int4_with_float32_params_and_padding() -> None:
    # Two channels of 3 values (N = 6, 3 bytes) and then an odd tensor (N = 5, last nibble pad).
    scales, minimums = [0.5, 2.0], [1.0, -10.0]
    params = struct.pack("<4f", *scales, *minimums)
    codes = [0, 7, 15, 1, 2, 3]  # channel 0 then channel 1, C order
    body = bytes([codes[0] | codes[1] << 4, codes[2] | codes[3] << 4, codes[4] | codes[5] << 4])
    fields = header_fields(
        codec="int4",
        shape=[2, 3],
        raw_bytes=3,
        compression="zstd",
        quant={"param_dtype": "float32"},
    )
    decoded = decode_frame(build_frame(fields, params=params, payload=zstd(body))).tensor
    expected = [
        [
            np.float32(q) * np.float32(scales[c]) + np.float32(minimums[c])
            for q in codes[3 * c : 3 * c + 3]
        ]
        for c in range(2)
    ]
    assert decoded.tolist() == expected == [[1.0, 4.5, 8.5], [-8.0, -6.0, -4.0]]

    odd = header_fields(codec="int4", shape=[1, 5], raw_bytes=3, quant={"param_dtype": "float16"})
    params = struct.pack("<ee", 1.0, 0.0)
    body = bytes([0x21, 0x43, 0x05])  # codes 1, 2, 3, 4, 5 and a zero padding nibble
    decoded = decode_frame(build_frame(odd, params=params, payload=body)).tensor
    assert decoded.tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0]]


def test_hand_built_jpeg() -> None:
    import io

    from PIL import Image
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[:24, :32])
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    body = buffer.getvalue()
    fields = header_fields(
        codec="jpeg",
        dtype="uint8",
        shape=[24, 32, 3],
        raw_bytes=len(body),
        quant={"quality": 95},
        split=0,
    )
    decoded = decode_frame(build_frame(fields, payload=body)).tensor
    assert decoded.shape == (24, 32, 3)
    assert np.abs(decoded.astype(int) - image).mean() < 6
