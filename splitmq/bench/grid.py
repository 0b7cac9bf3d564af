"""`splitmq bench grid`: the paper's experiment, data rate x server batch, for registered models.

For each model: natural bottlenecks under the paper's rule (element counts against a float16
input) and under this project's (frame bytes on the wire per codec, split 0 the JPEG), then the
latency T_k = head(k) + bytes(k) / rate + tail(k, batch) over 1-128 MB/s and 0.1-50 Mbit/s
against a server batch of 1-30, the argmin split per cell and its gain over the best static
split, local execution and full offload.

Device times: the model profiled on this host with one thread, times --slowdown. Server times:
the H200 profile where it has the model; otherwise the tail times measured here at batch 1
(one thread) scaled linearly with the batch. Profiles are cached; models at inputs above 300
pixels are profiled on one image with one timed run (this CPU is too slow for more).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from splitmq.bench.errors import BenchError
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq_base.models import StrictModel
from splitting.grid import (
    MB,
    MBIT,
    GridInputs,
    GridResult,
    byte_bottlenecks,
    cellular_rates,
    evaluate_grid,
    paper_bottlenecks,
    paper_bytes,
    paper_rates,
    server_batches,
)
from splitting.images import augmented_images
from splitting.partition import SplitModel
from splitting.profiles import ModelProfile
from splitting.profiling import ProfileError, default_cache_dir, profile_model
from splitting.reference import DEFAULT_SERVER_PROFILE  # the H200 profile shipped in the package
from splitting.server_profile import ServerProfile

GRID_CODECS = ("fp16", "int8", "int5", "int4")
SMALL_INPUT = 300  # above this, one image and one timed run (this CPU's limit)
DEFAULT_SLOWDOWN = 4.0  # the device node's default: a device four times slower than one core


class GridOptions(BenchOptions):
    models: tuple[str, ...] = Field(strict=False, min_length=1)
    slowdown: float = DEFAULT_SLOWDOWN
    server_profile: Path = Field(default=DEFAULT_SERVER_PROFILE, strict=False)
    max_batch: int = 30
    points: int = 32  # rates per range
    cache_dir: Path | None = Field(default=None, strict=False)  # None: splitmq's
    plots: Path | None = Field(default=None, strict=False)


class GridFigures(StrictModel):
    """One rule's grid over one rate range: the argmin split per cell and its gains."""

    splits: list[int]
    static_split: int
    ever_optimal: list[int]
    max_gain_vs_static: float
    max_gain_vs_local: float
    max_gain_vs_offload: float
    mean_gain_vs_static: float
    gain_region: dict[str, float] | None
    rates_Bps: list[float]
    batches: list[int]
    argmin: list[list[int]]
    gain_vs_static: list[list[float]]
    gain_vs_local: list[list[float]]
    gain_vs_offload: list[list[float]]


class Bottlenecks(StrictModel):
    paper: int
    bytes: dict[str, int]
    paper_splits: list[int]
    bytes_splits: dict[str, list[int]]


class ModelGrid(StrictModel):
    blocks: int
    input_size: int
    weights: str
    profile_images: int
    tail_source: str
    bottlenecks: Bottlenecks
    max_gain_vs_static: float
    grids: dict[str, dict[str, GridFigures]] = Field(description="rule -> rate range -> grid")


class GridReport(BenchReport):
    slowdown: float
    server_profile: str | None
    rates: dict[str, list[float]]
    batches: list[int]
    models: dict[str, ModelGrid]


def run_grid_bench(options: GridOptions) -> GridReport:
    """Every model's grid (and, with `plots`, its heatmap)."""
    from rich.progress import Progress

    try:
        server = _server_profile(options.server_profile)
        results: dict[str, Any] = {}
        with Progress(transient=False) as progress:
            task = progress.add_task("grid", total=len(options.models))
            for name in options.models:
                progress.update(task, description=f"profiling {name}")
                results[name] = model_grid(name, options, server)
                if options.plots:
                    plot_model(name, results[name], options.plots)
                progress.advance(task)
    except OSError as exc:  # a plot or the profile cache that cannot be written
        raise BenchError(f"bench grid: {exc}") from exc
    return GridReport(
        provenance=Provenance.collect(options),
        slowdown=options.slowdown,
        server_profile=str(options.server_profile) if server else None,
        rates={"paper_MBps": [1, 128], "cellular_Mbitps": [0.1, 50]},
        batches=[1, options.max_batch],
        models={name: _public(entry) for name, entry in results.items()},
    )


def format_summary(report: GridReport) -> str:
    return "\n".join(
        f"{name}: {entry.blocks} blocks, paper {entry.bottlenecks.paper}, "
        f"bytes {entry.bottlenecks.bytes}, max gain vs static {entry.max_gain_vs_static:.1%}"
        for name, entry in report.models.items()
    )


def _server_profile(path: Path) -> ServerProfile | None:
    return ServerProfile.load(path) if Path(path).is_file() else None


def device_profile(model: SplitModel, cache_dir: Path) -> ModelProfile:
    """Profile on this host (one thread), cached by model fingerprint, images and runs."""
    small = model.input_size <= SMALL_INPUT
    images, repeats = (4, 3) if small else (1, 1)
    path = cache_dir / f"grid-{model.name}-{model.fingerprint}-i{images}-r{repeats}.json"
    if path.is_file():
        try:
            return ModelProfile.load(path)
        except ProfileError:
            pass
    prepared = augmented_images(images, model.input_size, seed=0)
    profile = profile_model(model, prepared, codecs=GRID_CODECS, codec="int5", repeats=repeats)
    profile.save(path)
    return profile


def tail_function(
    name: str, profile: ModelProfile, server: ServerProfile | None
) -> tuple[Callable[[int, int], float], str]:
    """tail(k, batch) in ms, and where it comes from."""
    if server is not None and name in server.models() and server.blocks(name) == profile.n:
        return (
            lambda k, batch: server.tail_ms(name, k, batch)
        ), f"server profile ({server.device})"
    suffix = np.concatenate([np.cumsum(profile.block_ms[::-1])[::-1], [0.0]])
    return (lambda k, batch: float(suffix[k]) * batch), "this CPU at batch 1, times the batch"


def model_grid(name: str, options: GridOptions, server: ServerProfile | None) -> dict[str, Any]:
    """The grids of one model (GridResult objects, for the plots; `_public` makes them JSON)."""
    from splitting.registry import load_model

    model = load_model(name)
    cache = options.cache_dir or default_cache_dir()
    profile = device_profile(model, cache)
    shapes = model.split_shapes()
    head = [profile.device_ms_at(k) * options.slowdown for k in range(model.n + 1)]
    tail, tail_source = tail_function(name, profile, server)
    batches = server_batches(options.max_batch)
    ranges = {"paper": paper_rates(options.points), "cellular": cellular_rates(options.points)}
    paper_splits = paper_bottlenecks(shapes)
    grids: dict[str, dict[str, GridResult]] = {"paper": {}}
    for range_name, rates in ranges.items():
        inputs = GridInputs(head, paper_bytes(shapes), tail, paper_splits)
        grids["paper"][range_name] = evaluate_grid(inputs, rates, batches)
    bytes_splits: dict[str, list[int]] = {}
    for codec in GRID_CODECS:
        wire = [profile.bytes_at(k, codec) for k in range(model.n + 1)]
        bytes_splits[codec] = byte_bottlenecks(wire)
        grids[codec] = {
            range_name: evaluate_grid(GridInputs(head, wire, tail, bytes_splits[codec]), r, batches)
            for range_name, r in ranges.items()
        }
    return {
        "blocks": model.n,
        "input_size": model.input_size,
        "weights": model.weights,
        "profile_images": 4 if model.input_size <= SMALL_INPUT else 1,
        "tail_source": tail_source,
        "bottlenecks": {
            "paper": len(paper_splits),
            "bytes": {codec: len(splits) for codec, splits in bytes_splits.items()},
            "paper_splits": paper_splits,
            "bytes_splits": bytes_splits,
        },
        "max_gain_vs_static": grids["paper"]["paper"].max_gain_vs_static,
        "grids": grids,
    }


def _grid_json(result: GridResult) -> GridFigures:
    return GridFigures(
        splits=[int(k) for k in result.splits],
        static_split=int(result.static_split),
        ever_optimal=result.ever_optimal,
        max_gain_vs_static=float(result.max_gain_vs_static),
        max_gain_vs_local=float(result.gain_vs_local.max()),
        max_gain_vs_offload=float(result.gain_vs_offload.max()),
        mean_gain_vs_static=float(result.gain_vs_static.mean()),
        gain_region=result.region(0.01),
        rates_Bps=[round(float(r), 1) for r in result.rates],
        batches=[int(b) for b in result.batches],
        argmin=result.argmin.astype(int).tolist(),
        gain_vs_static=np.round(result.gain_vs_static, 4).tolist(),
        gain_vs_local=np.round(result.gain_vs_local, 4).tolist(),
        gain_vs_offload=np.round(result.gain_vs_offload, 4).tolist(),
    )


def _public(entry: dict[str, Any]) -> ModelGrid:
    out = {key: value for key, value in entry.items() if key != "grids"}
    grids = {
        rule: {range_name: _grid_json(result) for range_name, result in by_range.items()}
        for rule, by_range in entry["grids"].items()
    }
    return ModelGrid(**out, grids=grids)


def plot_model(name: str, entry: dict[str, Any], directory: Path) -> Path:
    """Gain over the best static split: the paper's rule at its rates, int5 bytes on cellular."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("paper rule (fp16 elements), MB/s", entry["grids"]["paper"]["paper"], MB),
        ("frame bytes, int5, MB/s", entry["grids"]["int5"]["paper"], MB),
        ("frame bytes, int5, Mbit/s", entry["grids"]["int5"]["cellular"], MBIT),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4), constrained_layout=True)
    for ax, (title, result, unit) in zip(axes, panels, strict=True):
        rates = result.rates / unit
        image = ax.pcolormesh(
            result.batches, rates, result.gain_vs_static, shading="nearest", vmin=0, vmax=0.5
        )
        ax.set_yscale("log")
        ax.set_xlabel("server batch")
        ax.set_ylabel("rate")
        ax.set_title(
            f"{title}\nstatic k={result.static_split}, max {result.max_gain_vs_static:.0%}"
        )
    fig.colorbar(image, ax=axes, label="gain of dynamic over best static split")
    fig.suptitle(name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"grid-{name}.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path
