"""`splitmq bench codec --json PATH`: every codec at every candidate split, on real inputs.

For N augmented real images (skimage.data and sklearn's sample images: random crops, flips,
scales) and each codec (lossless, fp16, int8, int5, int4) at each candidate split, it measures the
mean bytes of the whole frame, the median encode and decode time per frame, and the top-1
agreement of tail(decoded tensor) with the uncompressed fp32 model's top-1. Split 0 (the JPEG
of the input) is measured the same way.

The splits measured are the candidates of any codec (from a profile of the first inputs), so
every codec is compared at the same splits; `candidate` says whether k is one of its own.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from pydantic import Field

from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.text_table import aligned_rows
from splitmq_base.cli import progress_bar
from splitmq_base.models import StrictModel
from splitting.images import augmented_images
from splitting.partition import SplitModel
from splitting.profiles import DEFAULT_CODECS, DEFAULT_JPEG_QUALITY, ModelProfile
from splitting.profiling import CodecSamples, frame_round_trip, profile_model
from splitting.registry import DEFAULT_MODEL, load_model
from splitting.torch_blocks import torch_threads

DEFAULT_INPUTS = 200
DEFAULT_BATCH = 25
PROFILE_INPUTS = 16  # inputs the candidate splits are chosen from
LOSSLESS_CODECS = frozenset({"lossless"})


class CodecOptions(BenchOptions):
    model: str = DEFAULT_MODEL
    weights: str | None = None  # None: the model's own
    inputs: int = Field(default=DEFAULT_INPUTS, ge=1)
    seed: int = 0
    codecs: tuple[str, ...] = Field(default=DEFAULT_CODECS, strict=False)
    jpeg_quality: int = Field(default=DEFAULT_JPEG_QUALITY, ge=1, le=100)
    batch: int = Field(default=DEFAULT_BATCH, ge=1)
    threads: int | None = Field(default=None, ge=1)  # None: torch's


class CodecSummary(StrictModel):
    """One codec at one split: mean frame bytes, median codec times, top-1 agreement."""

    bytes: float
    encode_ms: float = Field(description="median per frame")
    decode_ms: float = Field(description="median per frame")
    top1_agreement: float


class SplitSummary(CodecSummary):
    bytes_vs_jpeg: float
    candidate: bool = Field(description="k is a natural bottleneck under this codec")


class CodecEntry(StrictModel):
    lossless: bool
    candidates: list[int]
    splits: dict[str, SplitSummary]


class CodecFigures(StrictModel):
    """What the measurement found, before the run's own seed, time and provenance."""

    model: str
    fingerprint: str
    weights: str
    inputs: int
    input_size: int
    jpeg_quality: int
    jpeg_bytes: float
    jpeg: CodecSummary
    split_names: dict[str, str]
    split_shapes: dict[str, list[int]]
    codecs: dict[str, CodecEntry]
    profile_inputs: int
    profile_input_bytes: float
    host: str
    machine: str
    threads: int
    torch: str
    date: str


class CodecReport(BenchReport, CodecFigures):
    seed: int
    wall_s: float


@dataclass
class Measured(CodecSamples):
    """Accumulated results of one codec at one split: frame samples and top-1 agreement."""

    agree: int = 0
    total: int = 0

    def summary(self) -> CodecSummary:
        return CodecSummary(
            bytes=statistics.fmean(self.sizes),
            encode_ms=statistics.median(self.encode_ms),
            decode_ms=statistics.median(self.decode_ms),
            top1_agreement=self.agree / self.total,
        )


def run_codec_bench(options: CodecOptions, *, quiet: bool = False) -> CodecReport:
    """Measure `options.inputs` augmented images of the model under every codec."""
    started = time.perf_counter()
    with torch_threads(options.threads or torch.get_num_threads()):
        model = load_model(options.model, weights=options.weights)
        batches = math.ceil(options.inputs / options.batch)
        with progress_bar(f"codecs on {model.name}", batches, quiet=quiet) as advance:
            figures = bench_codecs(
                model,
                augmented_images(options.inputs, model.input_size, options.seed),
                codecs=options.codecs,
                jpeg_quality=options.jpeg_quality,
                batch=options.batch,
                on_batch=advance,
            )
    return CodecReport(
        **dict(figures),
        provenance=Provenance.collect(options),
        seed=options.seed,
        wall_s=round(time.perf_counter() - started, 1),
    )


def bench_codecs(
    model: SplitModel,
    images: np.ndarray,
    *,
    codecs: Sequence[str] = DEFAULT_CODECS,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    batch: int = DEFAULT_BATCH,
    on_batch: Callable[[], None] = lambda: None,
) -> CodecFigures:
    """Measure every codec at the candidate splits of any codec over `images` (prepared);
    `on_batch()` runs after each batch of images (progress)."""
    profile = profile_model(
        model,
        images[:PROFILE_INPUTS],
        codecs=codecs,
        codec=codecs[0],
        jpeg_quality=jpeg_quality,
        threads=torch.get_num_threads(),
        repeats=1,
    )
    candidates = {codec: profile.candidates(codec) for codec in codecs}
    splits = sorted({k for ks in candidates.values() for k in ks if 0 < k < model.n})
    jpeg = Measured()
    results = {(codec, k): Measured() for codec in codecs for k in splits}
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        x = model.preprocess(chunk)
        reference = model.forward(x).argmax(dim=1)
        _measure_jpeg(model, chunk, reference, jpeg, jpeg_quality)
        kept = model.head_outputs(x, splits)
        for k in splits:
            arrays = kept[k].numpy()
            for codec in codecs:
                _measure_split(model, arrays, k, codec, reference, results[codec, k])
        on_batch()
    return _report(model, profile, images, candidates, splits, jpeg, results, jpeg_quality)


def _measure_jpeg(
    model: SplitModel,
    chunk: np.ndarray,
    reference: torch.Tensor,
    into: Measured,
    quality: int,
) -> None:
    decoded = [_round_trip(model, image, 0, "jpeg", into, quality) for image in chunk]
    top1 = model.forward(model.preprocess(np.stack(decoded))).argmax(dim=1)
    into.agree += int((top1 == reference).sum())
    into.total += len(chunk)


def _measure_split(
    model: SplitModel,
    arrays: np.ndarray,
    k: int,
    codec: str,
    reference: torch.Tensor,
    into: Measured,
) -> None:
    decoded = [_round_trip(model, array, k, codec, into) for array in arrays]
    top1 = model.tail(torch.from_numpy(np.stack(decoded)), k).argmax(dim=1)
    into.agree += int((top1 == reference).sum())
    into.total += len(arrays)


def _round_trip(
    model: SplitModel,
    array: np.ndarray,
    k: int,
    codec: str,
    into: Measured,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> np.ndarray:
    trip = frame_round_trip(array, model, k, codec, jpeg_quality=jpeg_quality)
    into.add(trip)
    return trip.tensor


def _report(
    model: SplitModel,
    profile: ModelProfile,
    images: np.ndarray,
    candidates: dict[str, list[int]],
    splits: list[int],
    jpeg: Measured,
    results: dict[tuple[str, int], Measured],
    jpeg_quality: int,
) -> CodecFigures:
    jpeg_summary = jpeg.summary()
    codecs_out = {
        codec: _codec_entry(codec, own, splits, results, jpeg_summary.bytes)
        for codec, own in candidates.items()
    }
    return CodecFigures(
        model=model.name,
        fingerprint=model.fingerprint,
        weights=model.weights,
        inputs=len(images),
        input_size=model.input_size,
        jpeg_quality=jpeg_quality,
        jpeg_bytes=jpeg_summary.bytes,
        jpeg=jpeg_summary,
        split_names={str(k): model.block_names[k - 1] for k in splits},
        split_shapes={str(k): list(model.split_shapes()[k]) for k in splits},
        codecs=codecs_out,
        profile_inputs=min(len(images), PROFILE_INPUTS),
        profile_input_bytes=profile.input_bytes,
        host=platform.node(),
        machine=platform.machine(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _codec_entry(
    codec: str,
    own: list[int],
    splits: list[int],
    results: dict[tuple[str, int], Measured],
    jpeg_bytes: float,
) -> CodecEntry:
    """One codec at every measured split; `candidate` where k is one of its own."""
    per_split = {}
    for k in splits:
        summary = results[codec, k].summary()
        per_split[str(k)] = SplitSummary(
            **dict(summary), bytes_vs_jpeg=summary.bytes / jpeg_bytes, candidate=k in own
        )
    return CodecEntry(lossless=codec in LOSSLESS_CODECS, candidates=own, splits=per_split)


def format_table(result: CodecFigures) -> str:
    """One row per codec and split, split 0 (JPEG) first."""
    header = ["codec", "k", "block", "bytes", "x JPEG", "enc ms", "dec ms", "top-1 agr", "cand"]
    rows = [header, _row("jpeg", "0", "input", result.jpeg, 1.0, True)]
    for codec, entry in result.codecs.items():
        for k, summary in entry.splits.items():
            name = result.split_names[k]
            rows.append(_row(codec, k, name, summary, summary.bytes_vs_jpeg, summary.candidate))
    lines = [
        f"{result.model} ({result.weights} weights), {result.inputs} inputs,"
        f" JPEG quality {result.jpeg_quality}, torch {result.torch} on {result.host}",
        "",
        *aligned_rows(rows, left={0, 2}),
        "",
        "cand: a natural bottleneck under that codec (bytes below every earlier split)",
    ]
    return "\n".join(lines)


def _row(
    codec: str, k: str, name: str, summary: CodecSummary, vs_jpeg: float, candidate: bool
) -> list[str]:
    return [
        codec,
        k,
        name,
        f"{summary.bytes:,.0f}",
        f"{vs_jpeg:.2f}",
        f"{summary.encode_ms:.3f}",
        f"{summary.decode_ms:.3f}",
        f"{100 * summary.top1_agreement:.1f}%",
        "*" if candidate else "",
    ]
