"""Image bodies that are cheap to send and, without bounds, costly to decode: the decoding
bombs a worker must refuse before Pillow parses them, and images with lying size fields."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from schemas.codecs import EncodedTensor

BOMB_BYTES = 16 * 1024 * 1024
COM = b"\xff\xfe\x00\x02"  # an empty comment segment
APP1 = b"\xff\xe1\x00\x02"  # an empty APP1 (EXIF) segment


def photo(size: int = 224, seed: int = 0) -> np.ndarray:
    """A smooth RGB image with some noise: a photo's statistics, not white noise's."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    base = ramp[:, None, None] + ramp[None, :, None] * np.array([0.2, 0.5, 0.8])
    return np.clip(base + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)


def image_body(image: np.ndarray, pil_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def segment_bomb(jpeg: bytes, segment: bytes, total: int = BOMB_BYTES) -> bytes:
    """`jpeg` with empty segments spliced after its SOI until the body is `total` bytes."""
    count = (total - len(jpeg)) // len(segment)
    return jpeg[:2] + segment * count + jpeg[2:]


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """`jpeg` whose start-of-frame segment claims width x height."""
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def webp_claiming(webp: bytes, width: int, height: int) -> bytes:
    """A lossless `webp` whose VP8L header claims width x height (14 bits each)."""
    data = bytearray(webp)
    at = data.find(b"VP8L") + 8
    assert data[at] == 0x2F, "not a lossless WebP"
    bits = int.from_bytes(data[at + 1 : at + 5], "little") & ~((1 << 28) - 1)
    bits |= (width - 1) | (height - 1) << 14
    data[at + 1 : at + 5] = bits.to_bytes(4, "little")
    return bytes(data)


def riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A RIFF/WEBP container of the given (fourcc, data) chunks, padded as RIFF wants."""
    body = b"".join(
        fourcc + len(data).to_bytes(4, "little") + data + b"\0" * (len(data) & 1)
        for fourcc, data in chunks
    )
    return b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WEBP" + body


def webp_chunks(webp: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = 12, []
    while pos < len(webp):
        length = int.from_bytes(webp[pos + 4 : pos + 8], "little")
        chunks.append((webp[pos : pos + 4], webp[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks


def image_tensor(codec: str, body: bytes, size: int = 224) -> EncodedTensor:
    quant = {"quality": 90} if codec == "jpeg" else None
    return EncodedTensor(codec, "uint8", (size, size, 3), quant, b"", body, "none", len(body))
