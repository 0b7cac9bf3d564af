"""Image sources: bundled samples, folders of real images, custom kinds."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device_node.errors import (
    EmptySourceError,
    MissingSourceError,
    UnknownSourceError,
    UnreadableImageError,
)
from device_node.sources import (
    CyclingSource,
    FolderSource,
    ImageSource,
    SampleSource,
    SourceConfig,
    SourceImage,
    build_source,
    register_source,
)
from splitting.images import sample_images


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Three real sample photographs as JPEG, PNG (grey) and PNG (RGBA), plus a text file."""
    samples = sample_images()[:3]
    (name0, rgb0), (name1, rgb1), (name2, rgb2) = samples
    Image.fromarray(rgb0).save(tmp_path / f"a_{name0}.jpg", quality=90)
    Image.fromarray(rgb1).convert("L").save(tmp_path / f"b_{name1}.PNG")
    Image.fromarray(rgb2).convert("RGBA").save(tmp_path / f"c_{name2}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def folder_config(path: Path, **kwargs: str) -> SourceConfig:
    return SourceConfig(kind="folder", path=path, **kwargs)


def test_samples_are_real_rgb_photos_and_cycle() -> None:
    source = build_source(SourceConfig())
    assert isinstance(source, SampleSource)
    assert isinstance(source, ImageSource)
    first = [source.read() for _ in range(len(source))]
    assert len({image.name for image in first}) == len(first)
    for image in first:
        assert image.pixels.dtype == np.uint8
        assert image.pixels.ndim == 3 and image.pixels.shape[2] == 3
        assert image.pixels.std() > 10  # a photograph, not a flat array
    assert source.read().name == first[0].name


def test_folder_reads_image_files_in_name_order_as_rgb(photo_folder: Path) -> None:
    source = build_source(folder_config(photo_folder))
    names = [source.read().name for _ in range(4)]
    assert [n.split("_")[0] for n in names] == ["a", "b", "c", "a"]
    for _ in range(3):
        image = source.read()
        assert image.pixels.dtype == np.uint8 and image.pixels.shape[2] == 3


def test_folder_jpeg_decodes_close_to_the_original(photo_folder: Path) -> None:
    original = sample_images()[0][1]
    decoded = FolderSource(folder_config(photo_folder)).read().pixels
    assert decoded.shape == original.shape
    assert np.abs(decoded.astype(int) - original.astype(int)).mean() < 6


def test_unreadable_file_is_skipped_with_a_warning(
    photo_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (photo_folder / "b0_broken.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    source = FolderSource(folder_config(photo_folder))
    with caplog.at_level(logging.WARNING, logger="device_node.sources"):
        names = [source.read().name for _ in range(6)]
    assert "b0_broken.jpg" not in names
    assert sum("b0_broken.jpg" in r.getMessage() for r in caplog.records) == 1  # warned once


def test_unreadable_file_raises_when_asked_to(photo_folder: Path) -> None:
    (photo_folder / "a0_broken.png").write_bytes(b"garbage")
    source = FolderSource(folder_config(photo_folder, on_unreadable="error"))
    with pytest.raises(UnreadableImageError, match=r"a0_broken\.png"):
        source.read()


def test_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingSourceError, match="does not exist"):
        FolderSource(folder_config(tmp_path / "nowhere"))
    with pytest.raises(MissingSourceError, match="needs a path"):
        FolderSource(SourceConfig(kind="folder"))
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.raises(EmptySourceError, match=re.escape(str(tmp_path))):
        FolderSource(folder_config(tmp_path))
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(EmptySourceError, match="no readable image"):
        FolderSource(folder_config(tmp_path)).read()


def test_custom_source_kind_is_built_from_config() -> None:
    class Gradient:
        """A synthetic camera: one frame per read."""

        def __init__(self, config: SourceConfig) -> None:
            self.frames = 0

        def read(self) -> SourceImage:
            self.frames += 1
            ramp = np.linspace(0, 255, 64, dtype=np.uint8)
            return SourceImage(f"frame-{self.frames}", np.stack([np.tile(ramp, (64, 1))] * 3, -1))

        def close(self) -> None:
            return None

    register_source("test_gradient_camera", Gradient)
    source = build_source(SourceConfig(kind="test_gradient_camera"))
    assert source.read().name == "frame-1"
    with pytest.raises(ValueError, match="already registered"):
        register_source("test_gradient_camera", Gradient)
    with pytest.raises(UnknownSourceError, match="test_gradient_camera"):
        build_source(SourceConfig(kind="webcam"))


def test_cycling_source_starts_where_asked() -> None:
    images = [SourceImage(str(i), np.zeros((2, 2, 3), np.uint8)) for i in range(3)]
    source = CyclingSource(images, start=2)
    assert [source.read().name for _ in range(4)] == ["2", "0", "1", "2"]
    with pytest.raises(EmptySourceError):
        CyclingSource([])
