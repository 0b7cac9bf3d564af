"""Image bodies are walked within bounds before Pillow sees them: decoding bombs and lying size
fields are refused with their stated codes, in time that does not grow with the bomb."""

from __future__ import annotations

import pytest

from schemas.codecs import decode_tensor, encode_tensor
from schemas.errors import FrameError, LimitExceededError, PayloadError, ShapeMismatchError
from schemas.frame import decode_frame
from schemas.imaging import (
    MAX_IMAGE_METADATA_BYTES,
    MAX_JPEG_SEGMENTS,
    MAX_WEBP_CHUNKS,
    jpeg_structure,
    webp_structure,
)
from tests.support.frames import build_frame, header_fields
from tests.support.image_bombs import (
    APP1,
    BOMB_BYTES,
    COM,
    image_body,
    image_tensor,
    jpeg_claiming,
    photo,
    riff,
    segment_bomb,
    webp_chunks,
    webp_claiming,
)

IMAGE = photo()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return bytes(encode_tensor(IMAGE, "jpeg").payload)


@pytest.fixture(scope="module")
def webp() -> bytes:
    return bytes(encode_tensor(IMAGE, "webp").payload)


@pytest.mark.parametrize("segment", [COM, APP1], ids=["com", "app1"])
def test_a_16_mib_body_of_empty_segments_is_refused_at_the_segment_limit(
    jpeg: bytes, segment: bytes
) -> None:
    bomb = segment_bomb(jpeg, segment)
    assert len(bomb) > BOMB_BYTES - 8 and bomb.count(segment) > 4_000_000
    with pytest.raises(LimitExceededError, match=f"over {MAX_JPEG_SEGMENTS} marker segments"):
        decode_tensor(image_tensor("jpeg", bomb))


def test_a_few_huge_app_segments_are_refused_at_the_metadata_limit(jpeg: bytes) -> None:
    big = b"\xff\xe1\xff\xff" + bytes(65533)
    bomb = jpeg[:2] + big * 5 + jpeg[2:]
    with pytest.raises(LimitExceededError, match=f"over {MAX_IMAGE_METADATA_BYTES} bytes"):
        decode_tensor(image_tensor("jpeg", bomb))


def test_a_run_of_fill_bytes_is_refused_without_walking_it(jpeg: bytes) -> None:
    bomb = jpeg[:2] + b"\xff" * BOMB_BYTES + jpeg[2:]
    with pytest.raises(LimitExceededError, match="fill bytes"):
        decode_tensor(image_tensor("jpeg", bomb))


def test_real_jpegs_with_metadata_and_progressive_scans_pass_the_walk() -> None:
    exif = b"Exif\0\0" + bytes(4000)
    body = image_body(IMAGE, "JPEG", progressive=True, exif=exif, quality=95)
    found = jpeg_structure(body)
    assert (found.width, found.height) == (224, 224)
    assert decode_tensor(image_tensor("jpeg", body)).shape == IMAGE.shape


@pytest.mark.parametrize("size", [(65535, 65535), (225, 224), (224, 1)])
def test_a_jpeg_claiming_another_size_is_a_shape_mismatch(
    jpeg: bytes, size: tuple[int, int]
) -> None:
    with pytest.raises(ShapeMismatchError, match=f"{size[0]}x{size[1]}"):
        decode_tensor(image_tensor("jpeg", jpeg_claiming(jpeg, *size)))


@pytest.mark.parametrize("size", [(16384, 16384), (224, 16384), (1, 1)])
def test_a_webp_claiming_another_size_is_a_shape_mismatch(
    webp: bytes, size: tuple[int, int]
) -> None:
    with pytest.raises(ShapeMismatchError, match=f"{size[0]}x{size[1]}"):
        decode_tensor(image_tensor("webp", webp_claiming(webp, *size)))


def test_a_lossless_webp_is_one_vp8l_chunk_of_its_own_size(webp: bytes) -> None:
    assert [fourcc for fourcc, _ in webp_chunks(webp)] == [b"VP8L"]
    found = webp_structure(webp)
    assert (found.width, found.height) == (224, 224)


def test_a_webp_with_too_many_chunks_is_refused(webp: bytes) -> None:
    chunks = [*webp_chunks(webp), *[(b"EXIF", b"x")] * MAX_WEBP_CHUNKS]
    with pytest.raises(LimitExceededError, match="chunks"):
        decode_tensor(image_tensor("webp", riff(chunks)))


def test_webp_metadata_chunks_are_bounded_in_bytes(webp: bytes) -> None:
    chunks = [*webp_chunks(webp), (b"XMP ", bytes(MAX_IMAGE_METADATA_BYTES))]
    with pytest.raises(LimitExceededError, match="outside its image"):
        decode_tensor(image_tensor("webp", riff(chunks)))


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        ([(b"ANIM", bytes(6))], "not one of a still image"),
        ([(b"ANMF", bytes(16))], "not one of a still image"),
        ([(b"VP8L", b"")], "more than one image"),
    ],
)
def test_an_animated_or_doubled_webp_is_refused(
    webp: bytes, chunks: list[tuple[bytes, bytes]], match: str
) -> None:
    with pytest.raises(PayloadError, match=match):
        decode_tensor(image_tensor("webp", riff(webp_chunks(webp) + chunks)))


def test_a_webp_whose_riff_size_lies_is_refused(webp: bytes) -> None:
    with pytest.raises(PayloadError, match="RIFF size"):
        decode_tensor(image_tensor("webp", webp + b"\0\0"))


@pytest.mark.parametrize("cut", [1, 3, 50, 600])
def test_truncated_image_bodies_are_bad_payloads(jpeg: bytes, webp: bytes, cut: int) -> None:
    for codec, body in (("jpeg", jpeg), ("webp", webp)):
        with pytest.raises(FrameError) as caught:
            decode_tensor(image_tensor(codec, body[:-cut]))
        assert caught.value.code == "bad_payload", (codec, caught.value)


def test_an_empty_codec_name_is_an_unknown_codec() -> None:
    raw = build_frame(header_fields(codec=""), payload=b"")
    with pytest.raises(FrameError) as caught:
        decode_frame(raw)
    assert caught.value.code == "unknown_codec"


def test_a_jpeg_with_restart_markers_in_its_scans_passes_the_walk() -> None:
    body = image_body(IMAGE, "JPEG", quality=90, restart_marker_blocks=1)
    assert any(bytes([0xFF, 0xD0 + n]) in body for n in range(8)), "no RSTn written"
    found = jpeg_structure(body)
    assert (found.width, found.height) == (224, 224)
    assert decode_tensor(image_tensor("jpeg", body)).shape == IMAGE.shape


def test_a_lossy_webp_reads_its_size_from_the_vp8_frame_header() -> None:
    body = image_body(IMAGE[:, :200], "WEBP", quality=80)
    assert [fourcc for fourcc, _ in webp_chunks(body)] == [b"VP8 "]
    found = webp_structure(body)
    assert (found.width, found.height) == (200, 224)
