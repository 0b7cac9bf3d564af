"""`splitmq bench backends`: eager PyTorch against ONNX Runtime on the same model, in one run.

Both backends run on one thread, in this process, on the same real images, alternating round by
round so that a busy machine slows both alike; every figure is a ratio of the two.

- Local: the whole model at batch 1, as a device runs it when it keeps a request.
- Tail: tail(k) at the model's best middle split (the device's default fixed split), as a
  worker runs it, at batch 1 and at `--batch`; each backend's throughput is its better setting.
- Agreement: top-1 of head and tail on the exported build against the unsplit PyTorch model, at
  every split, with lossless frames.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from edge_worker.runner import candidate_splits
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.bench.worker import best_middle, jpeg_bytes, split_inputs
from splitmq_base.models import StrictModel
from splitting.images import sample_images
from splitting.onnx_blocks import OnnxBlocks
from splitting.onnx_export import ensure_exported
from splitting.partition import SplitModel
from splitting.registry import DEFAULT_MODEL, load_model
from splitting.server_profile import median_ms
from splitting.torch_blocks import torch_threads

BACKENDS = ("torch", "onnxruntime")


class BackendBenchOptions(BenchOptions):
    model: str = DEFAULT_MODEL
    rounds: int = Field(5, ge=1)
    calls: int = Field(20, ge=1, description="timed calls per backend per round (median)")
    batch: int = Field(8, ge=1, description="the batched tail's size")
    export_dir: Path | None = Field(None, strict=False)


class Round(StrictModel):
    torch_ms: float
    onnxruntime_ms: float
    ratio: float = Field(description="torch_ms / onnxruntime_ms")


class Paired(StrictModel):
    """Alternating rounds of both backends and the median of their ratios."""

    rounds: list[Round]
    median_ratio: float

    def median_ms(self, backend: str) -> float:
        return statistics.median(getattr(r, f"{backend}_ms") for r in self.rounds)


class TailAtBatch(Paired):
    torch_per_s: float
    onnxruntime_per_s: float


class TailSection(StrictModel):
    split: int
    batches: dict[str, TailAtBatch]
    best_torch_per_s: float
    best_onnxruntime_per_s: float
    throughput_ratio: float = Field(description="best onnxruntime / best torch throughput")


class Agreement(StrictModel):
    top1_agreement: float
    pairs: int
    max_abs_logit_diff: float


class BackendBenchReport(BenchReport):
    model: str
    fingerprint: str
    local: Paired
    tail: TailSection
    agreement: Agreement


def run_backend_bench(options: BackendBenchOptions) -> BackendBenchReport:
    model = load_model(options.model)
    blocks = OnnxBlocks(
        ensure_exported(model, options.export_dir), expected_fingerprint=model.fingerprint
    )
    with torch_threads(1), torch.inference_mode():
        return BackendBenchReport(
            provenance=Provenance.collect(options),
            model=model.name,
            fingerprint=model.fingerprint,
            local=_local(model, blocks, options),
            tail=_tail(model, blocks, options),
            agreement=_agreement(model, blocks),
        )


def _paired(
    eager: Callable[[], object], onnx: Callable[[], object], options: BackendBenchOptions
) -> Paired:
    rounds = []
    for _ in range(options.rounds):
        # One untimed call first: it pays one-time setup that no request pays twice.
        eager_ms = median_ms(eager, options.calls, warmup=1)
        onnx_ms = median_ms(onnx, options.calls, warmup=1)
        rounds.append(Round(torch_ms=eager_ms, onnxruntime_ms=onnx_ms, ratio=eager_ms / onnx_ms))
    return Paired(rounds=rounds, median_ratio=statistics.median(r.ratio for r in rounds))


def _local(model: SplitModel, blocks: OnnxBlocks, options: BackendBenchOptions) -> Paired:
    x = model.preprocess(model.prepare_image(sample_images()[0][1]))
    x_np = x.numpy()
    return _paired(
        lambda: model.head(x, model.n), lambda: blocks.run_blocks(x_np, 0, model.n), options
    )


def _tail(model: SplitModel, blocks: OnnxBlocks, options: BackendBenchOptions) -> TailSection:
    splits = [k for k in candidate_splits(model, "int5") if 0 < k < model.n]
    inputs = {k: split_inputs(model, k, "int5") for k in splits}
    k = best_middle(splits, {s: i.frame_bytes for s, i in inputs.items()}, jpeg_bytes(model))
    tensors = inputs[k].tensors
    batches = {
        str(batch): _tail_at(model, blocks, k, tensors, batch, options)
        for batch in sorted({1, options.batch})
    }
    best = {b: max(getattr(row, f"{b}_per_s") for row in batches.values()) for b in BACKENDS}
    return TailSection(
        split=k,
        batches=batches,
        best_torch_per_s=best["torch"],
        best_onnxruntime_per_s=best["onnxruntime"],
        throughput_ratio=best["onnxruntime"] / best["torch"],
    )


def _tail_at(
    model: SplitModel,
    blocks: OnnxBlocks,
    k: int,
    tensors: list[np.ndarray],
    batch: int,
    options: BackendBenchOptions,
) -> TailAtBatch:
    z_np = np.stack([tensors[i % len(tensors)] for i in range(batch)])
    z = torch.from_numpy(z_np)
    timed = _paired(lambda: model.tail(z, k), lambda: blocks.tail(z_np, k), options)
    return TailAtBatch(
        **timed.model_dump(),
        torch_per_s=batch * 1000.0 / timed.median_ms("torch"),
        onnxruntime_per_s=batch * 1000.0 / timed.median_ms("onnxruntime"),
    )


def _agreement(model: SplitModel, blocks: OnnxBlocks) -> Agreement:
    agreed = total = 0
    worst = 0.0
    for _, image in sample_images():
        prepared = model.prepare_image(image)
        reference = model.forward(model.preprocess(prepared)).numpy()
        x = blocks.preprocess(prepared)
        for k in range(model.n + 1):
            logits = blocks.tail(blocks.head(x, k), k)
            agreed += int(logits.argmax() == reference.argmax())
            total += 1
            worst = max(worst, float(np.abs(logits - reference).max()))
    return Agreement(top1_agreement=agreed / total, pairs=total, max_abs_logit_diff=worst)


def format_report(report: BackendBenchReport) -> str:
    local, tail, agreement = report.local, report.tail, report.agreement
    lines = [
        f"{report.model} on one thread: eager PyTorch against ONNX Runtime",
        f"  local, batch 1: torch {local.median_ms('torch'):.1f} ms, onnxruntime "
        f"{local.median_ms('onnxruntime'):.1f} ms: {local.median_ratio:.2f}x",
    ]
    for batch, row in tail.batches.items():
        lines.append(
            f"  tail({tail.split}), batch {batch}: torch {row.torch_per_s:.0f}/s, "
            f"onnxruntime {row.onnxruntime_per_s:.0f}/s"
        )
    lines.append(f"  tail throughput, best of each: {tail.throughput_ratio:.2f}x")
    lines.append(
        f"  top-1 agreement (lossless, every split): {agreement.top1_agreement:.1%} of "
        f"{agreement.pairs}, logits within {agreement.max_abs_logit_diff:.1e}"
    )
    return "\n".join(lines)
