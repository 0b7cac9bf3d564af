"""Per-split profile of a model on this host: bytes on the wire and device-side latency.

A `ModelProfile` lists every split k = 0..n with the bytes of the frame that split would send
under each codec (whole frame, header included: bytes on the wire decide), the cumulative head
time of blocks [0, k) on this host, the codec times, and the top-1 agreement of the answer
computed from the decoded tensor with the unsplit model's. Split 0 sends the prepared image
under an image codec (lossless WebP by default, so the answer is exact; JPEG is opt-in);
split n sends nothing.

Candidates ("natural bottlenecks") are the splits whose bytes are smaller than every earlier
split's, split 0 always included, plus split n.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from schemas.codecs import INPUT_CODECS as _INPUT_CODECS
from splitmq_base.models import STRICT
from splitting.errors import ProfileError
from splitting.images import augmented_images
from splitting.jsonfile import read_json_object, validate_json_data
from splitting.partition import SplitModel

PROFILE_FORMAT_VERSION = 2
DEFAULT_CODECS: tuple[str, ...] = ("lossless", "fp16", "int8", "int5", "int4")
DEFAULT_DECISION_CODEC = "int5"
DEFAULT_JPEG_QUALITY = 90
#: Split 0's encodings of the uint8 image (every profile measures them all), and the default.
INPUT_CODECS: tuple[str, ...] = _INPUT_CODECS
DEFAULT_INPUT_CODEC = "webp"


def natural_bottlenecks(bytes_by_k: Sequence[int]) -> list[int]:
    """Splits worth offering: 0, every k that sends fewer bytes than all earlier splits, and n.

    `bytes_by_k[k]` is the number of bytes split k sends (index 0 the input, index n nothing).
    """
    if not bytes_by_k:
        raise ProfileError("natural_bottlenecks needs the bytes of at least one split")
    last = len(bytes_by_k) - 1
    chosen = [0]
    smallest = bytes_by_k[0]
    for k in range(1, last):
        if bytes_by_k[k] < smallest:
            chosen.append(k)
            smallest = bytes_by_k[k]
    if last > 0:
        chosen.append(last)
    return chosen


class SplitPoint(BaseModel):
    """One split k: what it sends and what it costs the device.

    `shape` is the per-sample shape sent (split 0: the (S, S, 3) image; split n: ()).
    `bytes`, `encode_ms` and `decode_ms` are keyed by codec; `device_ms` is the head time of
    blocks [0, k) on the profiling host (0 for k = 0). `candidate` is with respect to the
    profile's decision codec. `agreement[codec]` is the share of the profile's images whose
    top-1 class from the decoded tensor equals the unsplit model's (split 0: keyed by image
    codec; absent when not measured).
    """

    model_config = STRICT

    k: int
    name: str
    shape: tuple[int, ...]
    bytes: dict[str, int]
    device_ms: float
    encode_ms: dict[str, float] = Field(default_factory=dict)
    decode_ms: dict[str, float] = Field(default_factory=dict)
    candidate: bool = False
    agreement: dict[str, float] = Field(default_factory=dict)

    def replace(self, **changes: Any) -> SplitPoint:
        """A copy with `changes`, validated like any other split."""
        return _replaced(self, changes)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitPoint:
        return validate_json_data(cls, dict(data), what="split entry")


class ModelProfile(BaseModel):
    """Every split of one model as measured on one host.

    `codec` is the decision codec (whose bytes mark `SplitPoint.candidate`); `input_bytes` the
    frame of split 0; `block_ms[i]` the time of block i alone; `threads` the torch threads
    used for the device-side timings (1 models "a device N times slower than one core").
    The fields are declared in the order of the JSON file (format version 2).
    """

    model_config = STRICT

    model: str
    fingerprint: str
    n: int
    codec: str
    input_bytes: int
    host: str
    threads: int
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    torch_version: str = ""
    created: str = ""
    input_codec: str = DEFAULT_INPUT_CODEC
    images: int = 0
    block_ms: tuple[float, ...]
    splits: tuple[SplitPoint, ...]

    @model_validator(mode="after")
    def _consistent(self) -> ModelProfile:
        if len(self.splits) != self.n + 1:
            raise ProfileError(f"{self.model}: {len(self.splits)} splits for n={self.n} blocks")
        if [s.k for s in self.splits] != list(range(self.n + 1)):
            raise ProfileError(f"{self.model}: splits must be listed for k = 0..{self.n} in order")
        if len(self.block_ms) != self.n:
            raise ProfileError(f"{self.model}: {len(self.block_ms)} block times for n={self.n}")
        if self.codec not in self.codecs:
            raise ProfileError(f"{self.model}: decision codec {self.codec!r} not profiled")
        return self

    @property
    def codecs(self) -> tuple[str, ...]:
        """Codecs whose bytes are in the profile (those of split 1, or split 0 when n = 0)."""
        return tuple(self.splits[min(1, self.n)].bytes)

    def split(self, k: int) -> SplitPoint:
        if not 0 <= k <= self.n:
            raise ProfileError(f"{self.model}: split {k} outside 0..{self.n}")
        return self.splits[k]

    def codec_at(self, k: int, codec: str | None = None) -> str:
        """The codec split k uses when the device sends tensors with `codec`: split 0 sends
        the image with an image codec (`codec` itself if it is one, else the profile's)."""
        codec = codec or self.codec
        if k == 0 and codec not in self.splits[0].bytes:
            return self.input_codec
        return codec

    def bytes_at(self, k: int, codec: str | None = None) -> int:
        """Bytes split k sends under `codec` (default: the decision codec)."""
        point = self.split(k)
        codec = self.codec_at(k, codec)
        if codec not in point.bytes:
            raise ProfileError(f"{self.model}: codec {codec!r} not profiled (have {self.codecs})")
        return point.bytes[codec]

    def agreement_at(self, k: int, codec: str | None = None) -> float | None:
        """Measured top-1 agreement of split k under `codec`; None when not measured."""
        return self.split(k).agreement.get(self.codec_at(k, codec))

    def device_ms_at(self, k: int) -> float:
        return self.split(k).device_ms

    def candidates(self, codec: str | None = None) -> list[int]:
        """Natural bottlenecks under `codec` (default: the decision codec), 0 and n included."""
        return natural_bottlenecks([self.bytes_at(k, codec) for k in range(self.n + 1)])

    def with_codec(self, codec: str, input_codec: str | None = None) -> ModelProfile:
        """The same measurements with another decision codec and split-0 codec (candidate
        marks recomputed)."""
        changed = self.replace(codec=codec, input_codec=input_codec or self.input_codec)
        chosen = set(changed.candidates(codec))
        splits = tuple(s.replace(candidate=s.k in chosen) for s in self.splits)
        return changed.replace(splits=splits, input_bytes=changed.bytes_at(0))

    def replace(self, **changes: Any) -> ModelProfile:
        """A copy with `changes`, validated (and checked for consistency) like a new one."""
        return _replaced(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (format version 2); `candidates` is derived, written for readers."""
        data = self.model_dump(mode="json")
        ordered: dict[str, Any] = {"format_version": PROFILE_FORMAT_VERSION}
        for key, value in data.items():
            ordered[key] = value
            if key == "input_bytes":
                ordered["candidates"] = self.candidates()
        return ordered

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "profile") -> ModelProfile:
        """A profile from its JSON form; ProfileError names each bad key."""
        fields = dict(data)
        version = fields.pop("format_version", PROFILE_FORMAT_VERSION)
        if version != PROFILE_FORMAT_VERSION or isinstance(version, bool):
            raise ProfileError(f"{source}: profile format version {version!r} is not supported")
        fields.pop("candidates", None)  # derived from the bytes; recomputed, never trusted
        return validate_json_data(cls, fields, what=source)

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ModelProfile:
        return cls.from_dict(read_json_object(Path(path), "profile"), source=f"profile {path}")


Model = TypeVar("Model", bound=BaseModel)


def _replaced(model: Model, changes: Mapping[str, Any]) -> Model:
    fields = {name: getattr(model, name) for name in type(model).model_fields}
    return type(model).model_validate({**fields, **changes})


# -- measuring ----------------------------------------------------------------------------------

# Frames built while profiling carry ids as long as the runtime's (a uuid4 hex), so the header
# bytes counted here are those sent later.
_PROFILE_REQUEST_ID = "0" * 32
_PROFILE_DEVICE_ID = "profile-device"
DEFAULT_PROFILE_IMAGES = 8
DEFAULT_REPEATS = 10
_WARMUP_RUNS = 2


@dataclass
class CodecSamples:
    """Per-input frame sizes and codec times of one split under one codec."""

    sizes: list[int] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    agreed: list[bool] = field(default_factory=list)

    def add(self, trip: FrameRoundTrip) -> None:
        self.sizes.append(trip.nbytes)
        self.encode_ms.append(trip.encode_s * 1e3)
        self.decode_ms.append(trip.decode_s * 1e3)

    @property
    def median_bytes(self) -> int:
        return round(statistics.median(self.sizes)) if self.sizes else 0

    @property
    def median_encode_ms(self) -> float:
        return statistics.median(self.encode_ms) if self.encode_ms else 0.0

    @property
    def median_decode_ms(self) -> float:
        return statistics.median(self.decode_ms) if self.decode_ms else 0.0

    @property
    def agreement(self) -> float | None:
        return sum(self.agreed) / len(self.agreed) if self.agreed else None


def profile_model(
    model: SplitModel,
    images: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    codecs: Sequence[str] = DEFAULT_CODECS,
    codec: str = DEFAULT_DECISION_CODEC,
    input_codec: str = DEFAULT_INPUT_CODEC,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    threads: int = 1,
    repeats: int = DEFAULT_REPEATS,
    on_split: Callable[[], None] = lambda: None,
) -> ModelProfile:
    """Measure every split of `model` on this host.

    `images` are prepared uint8 inputs (default: `DEFAULT_PROFILE_IMAGES` augmented samples);
    others are passed through `model.prepare_image`. Bytes are the median over the images of
    the whole encoded frame (header included), codec times the median per frame, agreement the
    share of images whose top-1 from the decoded tensor is the unsplit model's, and
    `device_ms[k]` the median over `repeats` of the head time of blocks [0, k) at batch 1 with
    `threads` torch threads (default 1: a device is modelled as N times slower than one core).
    `on_split()` runs after each split is measured, and once more after the timing (progress:
    n + 1 calls in all).
    """
    codec_list = checked_codecs(codecs, codec)
    if input_codec not in INPUT_CODECS:
        raise ProfileError(f"split-0 codec must be one of {INPUT_CODECS}, got {input_codec!r}")
    if threads < 1 or repeats < 1:
        raise ProfileError(f"threads and repeats must be >= 1, got {threads} and {repeats}")
    prepared = prepared_batch(model, images)
    samples = split_samples(
        model, prepared, codec_list, jpeg_quality=jpeg_quality, on_split=on_split
    )
    with torch_threads(threads):
        block_ms, device_ms = time_blocks(model, model.preprocess(prepared[:1]), repeats)
    on_split()
    nothing = CodecSamples()  # split n sends nothing
    per_split = [samples.get(k, dict.fromkeys(codec_list, nothing)) for k in range(model.n + 1)]
    names = ["input", *model.block_names]
    shapes = model.split_shapes()
    points = tuple(
        SplitPoint(
            k=k,
            name=names[k],
            shape=shapes[k],
            bytes={c: m.median_bytes for c, m in split.items()},
            device_ms=device_ms[k],
            encode_ms={c: m.median_encode_ms for c, m in split.items()},
            decode_ms={c: m.median_decode_ms for c, m in split.items()},
            agreement={c: a for c, m in split.items() if (a := m.agreement) is not None},
        )
        for k, split in enumerate(per_split)
    )
    profile = ModelProfile(
        model=model.name,
        fingerprint=model.fingerprint,
        n=model.n,
        codec=codec,
        input_bytes=points[0].bytes[input_codec],
        splits=points,
        block_ms=tuple(block_ms),
        host=host_name(),
        threads=threads,
        jpeg_quality=jpeg_quality,
        torch_version=torch.__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        input_codec=input_codec,
        images=len(prepared),
    )
    return profile.with_codec(codec)


def checked_codecs(codecs: Sequence[str], decision_codec: str) -> list[str]:
    """The tensor codecs to profile, de-duplicated; the decision codec must be among them."""
    from schemas.codecs import CODECS, IMAGE_CODECS

    chosen = list(dict.fromkeys(codecs))
    tensor_codecs = [c for c in CODECS if c not in IMAGE_CODECS]
    unknown = [c for c in chosen if c not in tensor_codecs]
    if unknown or not chosen:
        raise ProfileError(f"codecs must be among {tensor_codecs}, got {list(codecs)}")
    if decision_codec not in chosen:
        raise ProfileError(f"decision codec {decision_codec!r} is not among {chosen}")
    return chosen


def prepared_batch(
    model: SplitModel, images: np.ndarray | Sequence[np.ndarray] | None
) -> np.ndarray:
    """uint8 (N, S, S, 3): the given images, prepared for the model when they are not yet."""
    size = model.input_size
    if images is None:
        return augmented_images(DEFAULT_PROFILE_IMAGES, size, seed=0)
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    batch = [
        image
        if image.shape == (size, size, 3) and image.dtype == np.uint8
        else model.prepare_image(image)
        for image in images
    ]
    if not batch:
        raise ProfileError("profiling needs at least one image")
    return np.stack(batch)


def split_samples(
    model: SplitModel,
    prepared: np.ndarray,
    codecs: Sequence[str],
    *,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    splits: Sequence[int] | None = None,
    input_codecs: Sequence[str] = INPUT_CODECS,
    on_split: Callable[[], None] = lambda: None,
) -> dict[int, dict[str, CodecSamples]]:
    """Frame sizes, codec times and top-1 agreement for every split 0..n-1 (or those in
    `splits`), per codec. Split 0 is measured under the image codecs `input_codecs`.
    `on_split()` runs after each split (progress)."""
    wanted = set(range(model.n)) if splits is None else {k for k in splits if k < model.n}
    x = model.preprocess(prepared)
    reference = _top1(model.forward(x))
    samples: dict[int, dict[str, CodecSamples]] = {}
    if 0 in wanted:
        samples[0] = {
            codec: _measure(model, prepared, 0, codec, jpeg_quality, reference)
            for codec in input_codecs
        }
    on_split()
    z = x
    for k in range(1, max(wanted, default=0) + 1):
        z = model.run_blocks(z, k - 1, k)  # one block at a time: only one split held in memory
        if k in wanted:
            arrays = z.numpy()
            samples[k] = {
                codec: _measure(model, arrays, k, codec, jpeg_quality, reference)
                for codec in codecs
            }
        on_split()
    return samples


def _measure(
    model: SplitModel,
    arrays: np.ndarray,
    k: int,
    codec: str,
    jpeg_quality: int,
    reference: np.ndarray,
) -> CodecSamples:
    """Every array through split k's frame under `codec`, and the tail's answer on what came
    out compared with the unsplit model's (`reference`, top-1 per array)."""
    measured = CodecSamples()
    decoded = []
    for array in arrays:
        trip = _timed_frame(array, model, k, codec, jpeg_quality)
        measured.add(trip)
        decoded.append(trip.tensor)
    batch = np.stack(decoded)
    z = model.preprocess(batch) if k == 0 else torch.from_numpy(batch)
    measured.agreed = [bool(a) for a in _top1(model.tail(z, k)) == reference]
    return measured


def _top1(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(dim=1).numpy()


def _timed_frame(
    array: np.ndarray, model: SplitModel, k: int, codec: str, jpeg_quality: int
) -> FrameRoundTrip:
    """A profiling round trip: its frame carries a device id, like the runtime's frames."""
    return frame_round_trip(
        array, model, k, codec, jpeg_quality=jpeg_quality, device_id=_PROFILE_DEVICE_ID
    )


@dataclass(frozen=True)
class FrameRoundTrip:
    """One tensor sent through a frame: the frame's size, both codec times, what came out."""

    nbytes: int
    encode_s: float
    decode_s: float
    tensor: np.ndarray


def frame_round_trip(
    array: np.ndarray,
    model: SplitModel,
    k: int,
    codec: str,
    *,
    jpeg_quality: int,
    device_id: str = "",
) -> FrameRoundTrip:
    """Encode `array` as split k's frame under `codec`, decode it back, and time both."""
    from schemas.frame import decode_frame, encode_frame

    started = time.perf_counter()
    frame = encode_frame(
        array,
        codec=codec,
        request_id=_PROFILE_REQUEST_ID,
        model=model.name,
        fingerprint=model.fingerprint,
        split=k,
        device_id=device_id,
        jpeg_quality=jpeg_quality,
    )
    encoded = time.perf_counter()
    tensor = decode_frame(frame).tensor
    return FrameRoundTrip(len(frame), encoded - started, time.perf_counter() - encoded, tensor)


def time_blocks(
    model: SplitModel, x: torch.Tensor, repeats: int
) -> tuple[list[float], list[float]]:
    """(block_ms per block, device_ms per split): medians over `repeats` runs at x's batch."""
    for _ in range(_WARMUP_RUNS):
        model.run_blocks(x, 0, model.n)
    runs = []
    for _ in range(repeats):
        times = []
        z = x
        for index in range(model.n):
            started = time.perf_counter()
            z = model.run_blocks(z, index, index + 1)
            times.append((time.perf_counter() - started) * 1e3)
        runs.append(times)
    block_ms = [statistics.median(run[i] for run in runs) for i in range(model.n)]
    head_ms = [statistics.median(sum(run[:k]) for run in runs) for k in range(1, model.n + 1)]
    return block_ms, [0.0, *head_ms]


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch with `threads` intra-op threads, restoring the previous setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def host_name() -> str:
    return platform.node() or "unknown-host"


# -- cache ----------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """$SPLITMQ_CACHE_DIR/profiles, else $XDG_CACHE_HOME/splitmq/profiles, else ~/.cache/..."""
    if os.environ.get("SPLITMQ_CACHE_DIR"):
        return Path(os.environ["SPLITMQ_CACHE_DIR"]) / "profiles"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitmq" / "profiles"


def profile_cache_path(
    model: SplitModel,
    cache_dir: str | Path | None = None,
    *,
    threads: int = 1,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> Path:
    """Where `load_or_profile` keeps the profile of this model, host and thread count."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", host_name())
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{model.name}-{model.fingerprint}-{host}-t{threads}-q{jpeg_quality}.json"
    return directory / name


def load_or_profile(
    model: SplitModel,
    cache_dir: str | Path | None = None,
    *,
    codecs: Sequence[str] = DEFAULT_CODECS,
    codec: str = DEFAULT_DECISION_CODEC,
    input_codec: str = DEFAULT_INPUT_CODEC,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    threads: int = 1,
    repeats: int = DEFAULT_REPEATS,
    refresh: bool = False,
) -> ModelProfile:
    """The cached profile of this model (same fingerprint, host, threads, codecs), or a new one.

    A missing, unreadable or mismatching cache file is replaced by a fresh measurement.
    """
    codec_list = checked_codecs(codecs, codec)
    path = profile_cache_path(model, cache_dir, threads=threads, jpeg_quality=jpeg_quality)
    if not refresh and path.is_file():
        try:
            cached = ModelProfile.load(path)
        except ProfileError:
            cached = None
        if cached is not None and _fits(cached, model, codec_list, threads, jpeg_quality):
            return cached.with_codec(codec, input_codec)
    profile = profile_model(
        model,
        codecs=codec_list,
        codec=codec,
        input_codec=input_codec,
        jpeg_quality=jpeg_quality,
        threads=threads,
        repeats=repeats,
    )
    profile.save(path)
    return profile


def _fits(
    profile: ModelProfile,
    model: SplitModel,
    codecs: Sequence[str],
    threads: int,
    jpeg_quality: int,
) -> bool:
    return (
        profile.model == model.name
        and profile.fingerprint == model.fingerprint
        and profile.n == model.n
        and profile.threads == threads
        and profile.jpeg_quality == jpeg_quality
        and profile.host == host_name()
        and set(codecs) <= set(profile.codecs)
    )
