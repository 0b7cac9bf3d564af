"""Image containers walked before any pixel work: what a JPEG or WebP body costs is bounded here.

Pillow parses JPEG marker segments in Python, holding the GIL: one 16 MiB body of 4 million
empty COM segments cost it seconds before a single pixel. These walks take time linear in the
segments they accept (at most a few hundred) and in C-speed byte searches, and read the image's
own width and height so a size mismatch is refused before Pillow allocates anything.
FORMAT.md ("Image bodies") states the bounds and their codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.errors import LimitExceededError, PayloadError

Buffer = bytes | bytearray | memoryview

#: A progressive JPEG needs about ten scans; a hostile one with a million of them takes
#: seconds to decode.
MAX_JPEG_SCANS = 64

#: Marker segments of a JPEG (RSTn inside scans not counted). Pillow's own output has about 10,
#: a progressive one with EXIF and ICC about 40.
MAX_JPEG_SEGMENTS = 256
#: Bytes of a JPEG outside its entropy-coded scans: markers, tables, EXIF, ICC, comments.
MAX_IMAGE_METADATA_BYTES = 256 * 1024
#: Chunks of a WebP: a still lossless image has 1 (VP8L), or VP8X with ICCP/EXIF/XMP around it.
MAX_WEBP_CHUNKS = 8

# A marker ending entropy-coded data: 0xFF then anything but 0x00 (a stuffed byte) or RSTn.
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_FILL = re.compile(rb"\xff+")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic): not DHT,
# JPG, DAC (0xC4, 0xC8, 0xCC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class ImageStructure:
    """What a container walk found: the image's own size, and what it cost to find."""

    width: int
    height: int


def jpeg_structure(body: Buffer) -> ImageStructure:
    """Walk a JPEG's marker segments within the limits; raises `LimitExceededError` over a
    limit, `PayloadError` for a body that is not a JPEG's structure."""
    data = bytes(body)
    if data[:2] != b"\xff\xd8":
        raise PayloadError("payload is not a JPEG image: no SOI marker")
    pos, segments, scans, metadata = 2, 0, 0, 2
    size: tuple[int, int] | None = None
    while True:
        marker, pos = _jpeg_marker(data, pos)
        if marker == 0xD9:  # EOI
            break
        if marker in _JPEG_STANDALONE:
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise LimitExceededError(f"JPEG has over {MAX_JPEG_SEGMENTS} marker segments")
        length = _u16be(data, pos)
        if length < 2 or pos + length > len(data):
            raise PayloadError(f"corrupt JPEG payload: segment 0x{marker:02X} overruns the body")
        metadata += 2 + length
        if metadata > MAX_IMAGE_METADATA_BYTES:
            raise LimitExceededError(
                f"JPEG has over {MAX_IMAGE_METADATA_BYTES} bytes outside its scans"
            )
        if marker in _JPEG_SOF and length >= 8:  # length, precision, height, width, ...
            size = (_u16be(data, pos + 5), _u16be(data, pos + 3))
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next real marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise LimitExceededError(f"JPEG has over {MAX_JPEG_SCANS} scans")
            found = _JPEG_SCAN_END.search(data, pos)
            if found is None:
                raise PayloadError("corrupt JPEG payload: a scan runs past the end of the body")
            pos = found.start()
    if size is None:
        raise PayloadError("payload is not a JPEG image: no start-of-frame segment")
    return ImageStructure(*size)


def _jpeg_marker(data: bytes, pos: int) -> tuple[int, int]:
    """(marker, position after it) at `pos`, skipping fill bytes (a run of 0xFF, bounded)."""
    fill = _JPEG_FILL.match(data, pos, pos + MAX_IMAGE_METADATA_BYTES)
    if fill is None:
        raise PayloadError(f"corrupt JPEG payload: no marker at byte {pos}")
    end = fill.end()
    if end - pos >= MAX_IMAGE_METADATA_BYTES:
        raise LimitExceededError(f"JPEG has over {MAX_IMAGE_METADATA_BYTES} fill bytes")
    if end >= len(data):
        raise PayloadError("corrupt JPEG payload: ends without an EOI marker")
    return data[end], end + 1


def _u16be(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


_WEBP_IMAGE_CHUNKS = frozenset({b"VP8L", b"VP8 "})
_WEBP_OTHER_CHUNKS = frozenset({b"VP8X", b"ICCP", b"EXIF", b"XMP ", b"ALPH"})


def webp_structure(body: Buffer) -> ImageStructure:
    """Walk a still WebP's RIFF chunks within the limits: one image chunk (VP8L or VP8),
    metadata chunks around it, no animation; the image's size from its own bitstream header."""
    data = bytes(body)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise PayloadError("payload is not a WEBP image: no RIFF/WEBP header")
    if int.from_bytes(data[4:8], "little") + 8 != len(data):
        raise PayloadError("corrupt WEBP payload: its RIFF size is not the body's length")
    pos, chunks, metadata = 12, 0, 12
    size: tuple[int, int] | None = None
    while pos < len(data):
        chunks += 1
        if chunks > MAX_WEBP_CHUNKS:
            raise LimitExceededError(f"WEBP has over {MAX_WEBP_CHUNKS} chunks")
        fourcc, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        start, pos = pos + 8, pos + 8 + length + (length & 1)
        if start + length > len(data):
            raise PayloadError(f"corrupt WEBP payload: chunk {fourcc!r} overruns the body")
        if fourcc in _WEBP_IMAGE_CHUNKS:
            if size is not None:
                raise PayloadError("WEBP payload holds more than one image (animation?)")
            size = _webp_size(fourcc, data[start : start + min(length, 10)])
        elif fourcc in _WEBP_OTHER_CHUNKS:
            metadata += 8 + length
            if metadata > MAX_IMAGE_METADATA_BYTES:
                raise LimitExceededError(
                    f"WEBP has over {MAX_IMAGE_METADATA_BYTES} bytes outside its image"
                )
        else:
            raise PayloadError(f"WEBP chunk {fourcc!r} is not one of a still image")
    if size is None:
        raise PayloadError("payload is not a WEBP image: no VP8L or VP8 chunk")
    return ImageStructure(*size)


def _webp_size(fourcc: bytes, head: bytes) -> tuple[int, int]:
    """(width, height) from the start of a VP8L or VP8 bitstream."""
    if fourcc == b"VP8L":
        if len(head) < 5 or head[0] != 0x2F:
            raise PayloadError("corrupt WEBP payload: bad VP8L signature")
        bits = int.from_bytes(head[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if len(head) < 10 or head[3:6] != b"\x9d\x01\x2a":
        raise PayloadError("corrupt WEBP payload: bad VP8 start code")
    return int.from_bytes(head[6:8], "little") & 0x3FFF, int.from_bytes(
        head[8:10], "little"
    ) & 0x3FFF
