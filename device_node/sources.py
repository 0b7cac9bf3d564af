"""Where a device's images come from: the bundled samples, an image folder, or your own source.

A source is anything with `read() -> SourceImage` and `close()` (see `ImageSource`); a camera
in real use. Sources are built from the `source` section of the device configuration through a
small registry, so a deployment can add its own kind without touching the node:

    from device_node.sources import register_source

    class CameraSource:
        def __init__(self, config: SourceConfig) -> None: ...
        def read(self) -> SourceImage: ...
        def close(self) -> None: ...

    register_source("camera", CameraSource)   # then `source: {kind: camera}` in the YAML

The folder source reads `.jpg`, `.jpeg` and `.png` files (any case), in name order, cycling.
A file Pillow cannot decode is skipped with a logged warning (`on_unreadable: skip`, the default:
one bad file should not stop a camera-trap device), or raises `UnreadableImageError`
(`on_unreadable: error`). A folder that is missing, has no image files, or whose every image
is unreadable raises a `SourceError` subclass naming the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from device_node.errors import (
    EmptySourceError,
    MissingSourceError,
    SourceRegistrationError,
    UnknownSourceError,
    UnreadableImageError,
)
from splitmq_base.models import STRICT

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class SourceConfig(BaseModel):
    """The `source` section of a device configuration."""

    model_config = STRICT

    kind: str = Field(
        default="samples", description="registered source kind: samples, folder, or your own"
    )
    path: Path | None = Field(default=None, strict=False, description="image folder (kind: folder)")
    on_unreadable: Literal["skip", "error"] = Field(
        default="skip", description="what a folder source does with a file it cannot decode"
    )


@dataclass(frozen=True)
class SourceImage:
    """One RGB image (uint8, HxWx3) and a name for it (file name, sample name, frame number)."""

    name: str
    pixels: np.ndarray


@runtime_checkable
class ImageSource(Protocol):
    """What the device node reads images from."""

    def read(self) -> SourceImage:
        """The next image. Sources that run out start over; a camera returns its next frame."""
        ...

    def close(self) -> None:
        """Release the source (camera handle, open files)."""
        ...


SourceFactory = Callable[[SourceConfig], ImageSource]
_REGISTRY: dict[str, SourceFactory] = {}


def register_source(kind: str, factory: SourceFactory, *, replace: bool = False) -> None:
    """Make `source: {kind: <kind>}` build images with `factory(config)`."""
    if not kind or not kind.isidentifier():
        raise SourceRegistrationError(f"source kind must be an identifier, got {kind!r}")
    if kind in _REGISTRY and not replace:
        raise SourceRegistrationError(f"source kind {kind!r} is already registered")
    _REGISTRY[kind] = factory


def source_kinds() -> list[str]:
    return sorted(_REGISTRY)


def build_source(config: SourceConfig) -> ImageSource:
    """Build the source that `config.kind` names."""
    factory = _REGISTRY.get(config.kind)
    if factory is None:
        raise UnknownSourceError(
            f"unknown source kind {config.kind!r}; registered kinds: {', '.join(source_kinds())}"
        )
    return factory(config)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow image (grey, palette, RGBA, 16-bit) as uint8 HxWx3."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


class CyclingSource:
    """Cycles through a fixed list of in-memory images."""

    def __init__(self, images: list[SourceImage], *, start: int = 0) -> None:
        if not images:
            raise EmptySourceError("the image list is empty")
        self.images = list(images)
        self._next = start

    def __len__(self) -> int:
        return len(self.images)

    def read(self) -> SourceImage:
        image = self.images[self._next % len(self.images)]
        self._next += 1
        return image

    def close(self) -> None:
        return None


class SampleSource(CyclingSource):
    """The real photographs bundled with scikit-image and scikit-learn (no download)."""

    def __init__(self, config: SourceConfig | None = None, *, start: int = 0) -> None:
        super().__init__(sample_source_images(), start=start)


def sample_source_images() -> list[SourceImage]:
    """The bundled sample photographs as SourceImages."""
    from splitting.images import sample_images  # loads the data packages only when asked

    return [SourceImage(name, pixels) for name, pixels in sample_images()]


class FolderSource:
    """The .jpg/.jpeg/.png files of a folder, in name order, decoded one at a time."""

    def __init__(self, config: SourceConfig) -> None:
        if config.path is None:
            raise MissingSourceError("source kind 'folder' needs a path")
        folder = Path(config.path).expanduser()
        if not folder.is_dir():
            raise MissingSourceError(f"image folder {folder} does not exist or is not a folder")
        self.folder = folder
        self.files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.files:
            raise EmptySourceError(f"image folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
        self.skip_unreadable = config.on_unreadable == "skip"
        self.skipped: set[Path] = set()
        self._next = 0

    def read(self) -> SourceImage:
        # At most one full pass: a pass that decodes nothing means the folder is unusable.
        for _ in range(len(self.files)):
            path = self.files[self._next % len(self.files)]
            self._next += 1
            if path in self.skipped:
                continue
            try:
                return SourceImage(path.name, load_image(path))
            except UnreadableImageError:
                if not self.skip_unreadable:
                    raise
                self.skipped.add(path)
                logger.warning("skipping unreadable image %s", path)
        raise EmptySourceError(f"no readable image in folder {self.folder}")

    def close(self) -> None:
        return None


def load_image(path: Path) -> np.ndarray:
    """Decode one image file as uint8 HxWx3, or raise UnreadableImageError naming it."""
    try:
        with Image.open(path) as image:
            return to_rgb_array(image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnreadableImageError(f"cannot decode image {path}: {exc}") from exc


register_source("samples", SampleSource)
register_source("folder", FolderSource)
