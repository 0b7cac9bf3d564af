"""Measuring a model's profile on this host (the data it yields is `splitting.profiles`).

Any backend is measured the same way, through the `Blocks` interface: frames of every split
under every codec, the answer of the tail on what came out against the unsplit model's, and the
head time of every split at batch 1. A PyTorch `SplitModel` is measured as `TorchBlocks`; an
exported build as itself, with no torch in the process.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitting.blocks import Blocks
from splitting.errors import ProfileError
from splitting.images import augmented_images
from splitting.onnx_blocks import OnnxBlocks
from splitting.profiles import (
    DEFAULT_CODECS,
    DEFAULT_DECISION_CODEC,
    DEFAULT_INPUT_CODEC,
    DEFAULT_JPEG_QUALITY,
    INPUT_CODECS,
    ModelProfile,
    SplitPoint,
)

if TYPE_CHECKING:
    from splitting.partition import SplitModel

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


def as_blocks(model: SplitModel | Blocks) -> Blocks:
    """What profiling runs: a PyTorch model through `TorchBlocks`, any `Blocks` as it is."""
    if isinstance(model, OnnxBlocks):
        return model
    from splitting.partition import SplitModel
    from splitting.torch_blocks import TorchBlocks

    return TorchBlocks(model) if isinstance(model, SplitModel) else model


def profile_model(
    model: SplitModel | Blocks,
    images: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    codecs: Sequence[str] = DEFAULT_CODECS,
    codec: str = DEFAULT_DECISION_CODEC,
    input_codec: str = DEFAULT_INPUT_CODEC,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    threads: int = 1,
    repeats: int = DEFAULT_REPEATS,
    on_split: Callable[[], None] = lambda: None,
    reference: SplitModel | Blocks | None = None,
) -> ModelProfile:
    """Measure every split of `model` on this host.

    `images` are prepared uint8 inputs (default: `DEFAULT_PROFILE_IMAGES` augmented samples);
    others are passed through `model.prepare_image`. Bytes are the median over the images of
    the whole encoded frame (header included), codec times the median per frame, agreement the
    share of images whose top-1 from the decoded tensor is the unsplit model's, and
    `device_ms[k]` the median over `repeats` of the head time of blocks [0, k) at batch 1 with
    `threads` torch threads (default 1: a device is modelled as N times slower than one core).
    `on_split()` runs after each split is measured, and once more after the timing (progress:
    n + 1 calls in all). The unsplit answers come from `reference` where given (an exported
    build is measured against the PyTorch model it came from), else from `model` itself.
    """
    codec_list = checked_codecs(codecs, codec)
    _check_settings(input_codec, threads, repeats)
    model = as_blocks(model)
    prepared = prepared_batch(model, images)
    samples = split_samples(
        model,
        prepared,
        codec_list,
        jpeg_quality=jpeg_quality,
        on_split=on_split,
        reference=None if reference is None else as_blocks(reference),
    )
    with backend_threads(model, threads):
        block_ms, device_ms = time_blocks(model, model.preprocess(prepared[:1]), repeats)
    on_split()
    points = _split_points(model, samples, device_ms, codec_list)
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
        torch_version=model.version if model.backend == "torch" else "",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        backend=model.backend,
        backend_version=model.version,
        input_codec=input_codec,
        images=len(prepared),
    )
    return profile.with_codec(codec)


def _check_settings(input_codec: str, threads: int, repeats: int) -> None:
    if input_codec not in INPUT_CODECS:
        raise ProfileError(f"split-0 codec must be one of {INPUT_CODECS}, got {input_codec!r}")
    if threads < 1 or repeats < 1:
        raise ProfileError(f"threads and repeats must be >= 1, got {threads} and {repeats}")


def _split_points(
    model: Blocks,
    samples: Mapping[int, Mapping[str, CodecSamples]],
    device_ms: Sequence[float],
    codecs: Sequence[str],
) -> tuple[SplitPoint, ...]:
    """One `SplitPoint` per split 0..n from the measured samples (split n sends nothing)."""
    nothing = CodecSamples()
    names = ["input", *model.block_names]
    shapes = model.model_info().split_shapes
    points = []
    for k in range(model.n + 1):
        split = samples.get(k, dict.fromkeys(codecs, nothing))
        point = SplitPoint(
            k=k,
            name=names[k],
            shape=shapes[k],
            bytes={c: m.median_bytes for c, m in split.items()},
            device_ms=device_ms[k],
            encode_ms={c: m.median_encode_ms for c, m in split.items()},
            decode_ms={c: m.median_decode_ms for c, m in split.items()},
            agreement={c: a for c, m in split.items() if (a := m.agreement) is not None},
        )
        points.append(point)
    return tuple(points)


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


def prepared_batch(model: Blocks, images: np.ndarray | Sequence[np.ndarray] | None) -> np.ndarray:
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
    model: Blocks,
    prepared: np.ndarray,
    codecs: Sequence[str],
    *,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    splits: Sequence[int] | None = None,
    input_codecs: Sequence[str] = INPUT_CODECS,
    on_split: Callable[[], None] = lambda: None,
    reference: Blocks | None = None,
) -> dict[int, dict[str, CodecSamples]]:
    """Frame sizes, codec times and top-1 agreement for every split 0..n-1 (or those in
    `splits`), per codec, against the unsplit answers of `reference` (default: `model`).
    Split 0 is measured under the image codecs `input_codecs`. `on_split()` runs after each
    split (progress)."""
    wanted = set(range(model.n)) if splits is None else {k for k in splits if k < model.n}
    x = model.preprocess(prepared)
    unsplit = reference or model
    answers = _top1(unsplit.run_blocks(unsplit.preprocess(prepared), 0, unsplit.n))
    samples: dict[int, dict[str, CodecSamples]] = {}
    if 0 in wanted:
        samples[0] = {
            codec: _measure(model, prepared, 0, codec, jpeg_quality, answers)
            for codec in input_codecs
        }
    on_split()
    z = x
    for k in range(1, max(wanted, default=0) + 1):
        z = model.run_blocks(z, k - 1, k)  # one block at a time: only one split held in memory
        if k in wanted:
            samples[k] = {
                codec: _measure(model, z, k, codec, jpeg_quality, answers) for codec in codecs
            }
        on_split()
    return samples


def _measure(
    model: Blocks,
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
    z = model.preprocess(batch) if k == 0 else batch
    measured.agreed = [bool(a) for a in _top1(model.run_blocks(z, k, model.n)) == reference]
    return measured


def _top1(logits: np.ndarray) -> np.ndarray:
    return logits.reshape(logits.shape[0], -1).argmax(axis=1)


def _timed_frame(
    array: np.ndarray, model: Blocks, k: int, codec: str, jpeg_quality: int
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
    model: Blocks | SplitModel,
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


def time_blocks(model: Blocks, x: np.ndarray, repeats: int) -> tuple[list[float], list[float]]:
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


def retimed(
    profile: ModelProfile, model: Blocks, *, threads: int = 1, repeats: int = DEFAULT_REPEATS
) -> ModelProfile:
    """`profile`, measured elsewhere on the same build, with this host's device times: bytes
    and agreement belong to the build, the head times to the host that runs it."""
    size = model.input_size
    x = model.preprocess(np.zeros((size, size, 3), dtype=np.uint8))
    with backend_threads(model, threads):
        block_ms, device_ms = time_blocks(model, x, repeats)
    return profile.replace(
        splits=tuple(s.replace(device_ms=device_ms[s.k]) for s in profile.splits),
        block_ms=tuple(block_ms),
        host=host_name(),
        threads=threads,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


@contextmanager
def backend_threads(model: Blocks, threads: int) -> Iterator[None]:
    """Time with `threads` intra-op threads: torch's are set for the duration; an exported
    build's sessions were made with theirs (OnnxBlocks' `threads`)."""
    if model.backend != "torch":
        with nullcontext():
            yield
        return
    from splitting.torch_blocks import torch_threads

    with torch_threads(threads):
        yield


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
    model: SplitModel | Blocks,
    cache_dir: str | Path | None = None,
    *,
    threads: int = 1,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> Path:
    """Where `load_or_profile` keeps the profile of this model, host and thread count."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", host_name())
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    backend = as_blocks(model).backend
    name = f"{model.name}-{model.fingerprint}-{backend}-{host}-t{threads}-q{jpeg_quality}.json"
    return directory / name


def load_or_profile(
    model: SplitModel | Blocks,
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
    model = as_blocks(model)
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
    model: Blocks,
    codecs: Sequence[str],
    threads: int,
    jpeg_quality: int,
) -> bool:
    return (
        profile.model == model.name
        and profile.fingerprint == model.fingerprint
        and profile.n == model.n
        and profile.backend == model.backend
        and profile.threads == threads
        and profile.jpeg_quality == jpeg_quality
        and profile.host == host_name()
        and set(codecs) <= set(profile.codecs)
    )
