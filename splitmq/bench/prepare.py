"""Split 0's prepare step: FORMAT.md 11.2's integer resize (numpy) against Pillow's BILINEAR.

`splitmq bench prepare` prepares every bundled sample photo (at its own size, and enlarged
`--enlarge` times, as a camera frame would be) to S = 224 both ways: `prepare_image` (the
recipe every client can reproduce) and Pillow's antialiased BILINEAR resize plus the same crop
(recipe version 1). Per way it reports the median milliseconds per image (best of `--repeats`
runs of each image, one thread: neither uses more), and between the two the share of values
that differ, the largest and mean absolute difference, and, with the model, how often lite0's
top-1 and top-5 order agree on the two preparations.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image
from pydantic import Field

from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.text_table import aligned_rows
from splitmq_base.models import StrictModel
from splitting.images import sample_images
from splitting.pixels import RECIPE_VERSION, as_rgb_uint8, prepare_image, resize_target

SIZE = 224
Prepare = Callable[[np.ndarray, int], np.ndarray]


class PrepareOptions(BenchOptions):
    repeats: int = Field(default=5, ge=1)
    enlarge: int = Field(default=3, ge=1, le=8)
    model: str | None = "efficientnet-lite0"  # None: pixels and times only


class WayTimes(StrictModel):
    """One way of preparing, over one set of photos: median and worst ms per image."""

    median_ms: float
    max_ms: float


class PhotoSet(StrictModel):
    """The sample photos at one scale: both ways' times and how far apart their pixels are."""

    photos: int
    median_pixels: int = Field(description="median input H * W")
    recipe: WayTimes = Field(description=f"FORMAT.md 11.2 version {RECIPE_VERSION} (numpy)")
    pillow: WayTimes = Field(description="Pillow BILINEAR resize + crop (recipe version 1)")
    speed_ratio: float = Field(description="recipe median / Pillow median (> 1: slower)")
    differing_values: float = Field(description="share of prepared values that differ")
    max_abs_diff: int
    mean_abs_diff: float


class PrepareReport(BenchReport):
    benchmark: str = "prepare"
    size: int
    sets: dict[str, PhotoSet]
    top1_agree: int | None = Field(description="photos whose top-1 is the same both ways")
    top5_order_agree: int | None = Field(description="photos whose top-5 list is the same")
    photos: int


def pillow_prepare(image: np.ndarray, size: int) -> np.ndarray:
    """Recipe version 1: Pillow's antialiased BILINEAR to the same sizes, the same crop."""
    rgb = as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    shorter, target = min(height, width), resize_target(size)
    new_w = (2 * width * target + shorter) // (2 * shorter)
    new_h = (2 * height * target + shorter) // (2 * shorter)
    resized = Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)))


def _best_ms(prepare: Prepare, image: np.ndarray, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        prepare(image, SIZE)
        best = min(best, time.perf_counter() - started)
    return best * 1000.0


def _times(samples: list[float]) -> WayTimes:
    return WayTimes(median_ms=statistics.median(samples), max_ms=max(samples))


def _photo_set(photos: list[np.ndarray], repeats: int) -> PhotoSet:
    recipe_ms = [_best_ms(prepare_image, photo, repeats) for photo in photos]
    pillow_ms = [_best_ms(pillow_prepare, photo, repeats) for photo in photos]
    diffs = np.stack(
        [np.abs(prepare_image(p, SIZE).astype(np.int16) - pillow_prepare(p, SIZE)) for p in photos]
    )
    recipe, pillow = _times(recipe_ms), _times(pillow_ms)
    return PhotoSet(
        photos=len(photos),
        median_pixels=int(statistics.median(p.shape[0] * p.shape[1] for p in photos)),
        recipe=recipe,
        pillow=pillow,
        speed_ratio=recipe.median_ms / pillow.median_ms,
        differing_values=float((diffs > 0).mean()),
        max_abs_diff=int(diffs.max()),
        mean_abs_diff=float(diffs.mean()),
    )


def _enlarged(photo: np.ndarray, factor: int) -> np.ndarray:
    height, width = photo.shape[:2]
    bigger = Image.fromarray(photo).resize(
        (width * factor, height * factor), Image.Resampling.LANCZOS
    )
    return np.asarray(bigger)


def _agreement(model_name: str, photos: list[np.ndarray]) -> tuple[int, int]:
    """(top-1 agreements, top-5 list agreements) of the model on the two preparations."""
    import torch

    from splitting.registry import load_model

    model = load_model(model_name)
    top1 = top5 = 0
    with torch.inference_mode():
        for photo in photos:
            tops = [
                torch.topk(model.forward(model.preprocess(prepare(photo, SIZE))), 5).indices
                for prepare in (prepare_image, pillow_prepare)
            ]
            top1 += int(tops[0][0, 0] == tops[1][0, 0])
            top5 += int(torch.equal(tops[0], tops[1]))
    return top1, top5


def run_prepare_bench(options: PrepareOptions) -> PrepareReport:
    photos = [photo for _, photo in sample_images()]
    sets = {"samples": _photo_set(photos, options.repeats)}
    if options.enlarge > 1:
        bigger = [_enlarged(photo, options.enlarge) for photo in photos]
        sets[f"samples_x{options.enlarge}"] = _photo_set(bigger, options.repeats)
    agreement = (None, None) if options.model is None else _agreement(options.model, photos)
    return PrepareReport(
        provenance=Provenance.collect(options),
        size=SIZE,
        sets=sets,
        top1_agree=agreement[0],
        top5_order_agree=agreement[1],
        photos=len(photos),
    )


def format_report(report: PrepareReport) -> str:
    rows = [["photos", "pixels", "recipe ms", "pillow ms", "ratio", "differ", "max", "mean"]]
    for name, s in report.sets.items():
        rows.append(
            [
                f"{name} ({s.photos})",
                str(s.median_pixels),
                f"{s.recipe.median_ms:.2f}",
                f"{s.pillow.median_ms:.2f}",
                f"{s.speed_ratio:.2f}",
                f"{s.differing_values:.4%}",
                str(s.max_abs_diff),
                f"{s.mean_abs_diff:.5f}",
            ]
        )
    lines = aligned_rows(rows)
    if report.top1_agree is not None:
        lines.append(
            f"top-1 agrees on {report.top1_agree}/{report.photos}, top-5 order on "
            f"{report.top5_order_agree}/{report.photos}"
        )
    return "\n".join(lines)
