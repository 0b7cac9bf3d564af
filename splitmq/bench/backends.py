"""`splitmq bench backends`: eager PyTorch against ONNX Runtime on the same model, in one run,
and OpenVINO's CPU plugin beside them where openvino is installed (`splitmq[openvino]`).

Every backend runs on one thread, in this process, on the same real images, taking turns round
by round so that a busy machine slows all alike; every figure is a ratio of two of them.

- Local: the whole model at batch 1, as a device runs it when it keeps a request.
- Head: head(k) at the model's best middle split, as a device runs it before sending.
- Tail: tail(k) at that split (the device's default fixed split), as a worker runs it, at
  batch 1 and at `--batch`; each backend's throughput is its better setting. OpenVINO runs at
  batch 1 only.
- Agreement: top-1 of head and tail on the exported build against the unsplit PyTorch model, at
  every split, with lossless frames.

OpenVINO runs the same block files twice: at float32, and at the plugin's own default precision
where that differs (bf16 on CPUs that have it), each with its own agreement.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from edge_worker.runner import candidate_splits
from splitmq.bench.openvino_chain import OpenVinoChain, default_precision, openvino_installed
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

#: Runs blocks [start, stop) on a batch of split-`start` tensors.
RunBlocks = Callable[[np.ndarray, int, int], np.ndarray]


class BackendBenchOptions(BenchOptions):
    model: str = DEFAULT_MODEL
    rounds: int = Field(5, ge=1)
    calls: int = Field(20, ge=1, description="timed calls per backend per round (median)")
    batch: int = Field(8, ge=1, description="the batched tail's size")
    export_dir: Path | None = Field(None, strict=False)
    openvino: bool = Field(True, description="time OpenVINO too where it is installed")


class Round(StrictModel):
    torch_ms: float
    onnxruntime_ms: float
    ratio: float = Field(description="torch_ms / onnxruntime_ms")
    openvino_ms: dict[str, float] = Field(
        default_factory=dict, description="OpenVINO's time per precision (f32, bf16)"
    )


class Paired(StrictModel):
    """Rounds of every backend in turn and the median of their ratios."""

    rounds: list[Round]
    median_ratio: float
    openvino_vs_onnxruntime: dict[str, float] = Field(
        default_factory=dict,
        description="per precision, the median of onnxruntime_ms / openvino_ms (>1: faster)",
    )

    def median_ms(self, backend: str) -> float:
        return statistics.median(getattr(r, f"{backend}_ms") for r in self.rounds)

    def openvino_median_ms(self, precision: str) -> float:
        return statistics.median(r.openvino_ms[precision] for r in self.rounds)


class TailAtBatch(Paired):
    torch_per_s: float
    onnxruntime_per_s: float
    openvino_per_s: dict[str, float] = Field(default_factory=dict)


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


class OpenVinoRun(StrictModel):
    """OpenVINO at one precision: what the plugin computed in and how close it came."""

    precision: str
    agreement: Agreement


class OpenVinoSection(StrictModel):
    version: str
    default_precision: str = Field(description="the CPU plugin's precision when not told")
    runs: dict[str, OpenVinoRun]


class BackendBenchReport(BenchReport):
    model: str
    fingerprint: str
    local: Paired
    head: Paired | None = Field(None, description="head(k) at the tail's split, batch 1")
    tail: TailSection
    agreement: Agreement
    openvino: OpenVinoSection | None = Field(None, description="null where not installed")


class _Runners:
    """The backends under test; OpenVINO's by precision, none where it is not installed."""

    def __init__(self, model: SplitModel, options: BackendBenchOptions) -> None:
        directory = ensure_exported(model, options.export_dir)
        self.onnx = OnnxBlocks(directory, expected_fingerprint=model.fingerprint)
        self.openvino: dict[str, OpenVinoChain] = {}
        if options.openvino and openvino_installed():
            for precision in dict.fromkeys(("f32", default_precision())):
                self.openvino[precision] = OpenVinoChain(
                    directory, expected_fingerprint=model.fingerprint, precision=precision
                )


def run_backend_bench(options: BackendBenchOptions) -> BackendBenchReport:
    model = load_model(options.model)
    runners = _Runners(model, options)
    with torch_threads(1), torch.inference_mode():
        tail = _tail(model, runners, options)
        return BackendBenchReport(
            provenance=Provenance.collect(options),
            model=model.name,
            fingerprint=model.fingerprint,
            local=_local(model, runners, options),
            head=_head(model, runners, tail.split, options),
            tail=tail,
            agreement=_agreement(model, runners.onnx, runners.onnx.run_blocks),
            openvino=_openvino_section(model, runners),
        )


def _paired(
    eager: Callable[[], object],
    onnx: Callable[[], object],
    options: BackendBenchOptions,
    openvino: dict[str, Callable[[], object]] | None = None,
) -> Paired:
    rounds = []
    for _ in range(options.rounds):
        # One untimed call first: it pays one-time setup that no request pays twice.
        eager_ms = median_ms(eager, options.calls, warmup=1)
        onnx_ms = median_ms(onnx, options.calls, warmup=1)
        openvino_ms = {
            precision: median_ms(call, options.calls, warmup=1)
            for precision, call in (openvino or {}).items()
        }
        rounds.append(
            Round(
                torch_ms=eager_ms,
                onnxruntime_ms=onnx_ms,
                ratio=eager_ms / onnx_ms,
                openvino_ms=openvino_ms,
            )
        )
    return Paired(
        rounds=rounds,
        median_ratio=statistics.median(r.ratio for r in rounds),
        openvino_vs_onnxruntime={
            precision: statistics.median(
                r.onnxruntime_ms / r.openvino_ms[precision] for r in rounds
            )
            for precision in openvino or {}
        },
    )


def _openvino_calls(
    runners: _Runners, x: np.ndarray, start: int, stop: int
) -> dict[str, Callable[[], object]]:
    return {
        precision: functools.partial(chain.run_blocks, x, start, stop)
        for precision, chain in runners.openvino.items()
    }


def _local(model: SplitModel, runners: _Runners, options: BackendBenchOptions) -> Paired:
    x = model.preprocess(model.prepare_image(sample_images()[0][1]))
    x_np = x.numpy()
    return _paired(
        lambda: model.head(x, model.n),
        lambda: runners.onnx.run_blocks(x_np, 0, model.n),
        options,
        _openvino_calls(runners, x_np, 0, model.n),
    )


def _head(model: SplitModel, runners: _Runners, k: int, options: BackendBenchOptions) -> Paired:
    x = model.preprocess(model.prepare_image(sample_images()[0][1]))
    x_np = x.numpy()
    return _paired(
        lambda: model.head(x, k),
        lambda: runners.onnx.head(x_np, k),
        options,
        _openvino_calls(runners, x_np, 0, k),
    )


def _tail(model: SplitModel, runners: _Runners, options: BackendBenchOptions) -> TailSection:
    splits = [k for k in candidate_splits(model, "int5") if 0 < k < model.n]
    inputs = {k: split_inputs(model, k, "int5") for k in splits}
    k = best_middle(splits, {s: i.frame_bytes for s, i in inputs.items()}, jpeg_bytes(model))
    tensors = inputs[k].tensors
    batches = {
        str(batch): _tail_at(model, runners, k, tensors, batch, options)
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
    runners: _Runners,
    k: int,
    tensors: list[np.ndarray],
    batch: int,
    options: BackendBenchOptions,
) -> TailAtBatch:
    z_np = np.stack([tensors[i % len(tensors)] for i in range(batch)])
    z = torch.from_numpy(z_np)
    openvino = _openvino_calls(runners, z_np, k, model.n) if batch == 1 else {}
    timed = _paired(lambda: model.tail(z, k), lambda: runners.onnx.tail(z_np, k), options, openvino)
    return TailAtBatch(
        **timed.model_dump(),
        torch_per_s=batch * 1000.0 / timed.median_ms("torch"),
        onnxruntime_per_s=batch * 1000.0 / timed.median_ms("onnxruntime"),
        openvino_per_s={p: batch * 1000.0 / timed.openvino_median_ms(p) for p in openvino},
    )


def _agreement(model: SplitModel, onnx: OnnxBlocks, run_blocks: RunBlocks) -> Agreement:
    """Head then tail at every split against the unsplit model; the build's own preprocessing."""
    agreed = total = 0
    worst = 0.0
    for _, image in sample_images():
        prepared = model.prepare_image(image)
        reference = model.forward(model.preprocess(prepared)).numpy()
        x = onnx.preprocess(prepared)
        for k in range(model.n + 1):
            logits = run_blocks(run_blocks(x, 0, k), k, model.n)
            agreed += int(logits.argmax() == reference.argmax())
            total += 1
            worst = max(worst, float(np.abs(logits - reference).max()))
    return Agreement(top1_agreement=agreed / total, pairs=total, max_abs_logit_diff=worst)


def _openvino_section(model: SplitModel, runners: _Runners) -> OpenVinoSection | None:
    if not runners.openvino:
        return None
    chains = list(runners.openvino.values())
    return OpenVinoSection(
        version=chains[0].version,
        default_precision=default_precision(),
        runs={
            precision: OpenVinoRun(
                precision=chain.precision,
                agreement=_agreement(model, runners.onnx, chain.run_blocks),
            )
            for precision, chain in runners.openvino.items()
        },
    )


def format_report(report: BackendBenchReport) -> str:
    local, tail, agreement = report.local, report.tail, report.agreement
    lines = [
        f"{report.model} on one thread: eager PyTorch against ONNX Runtime",
        f"  local, batch 1: torch {local.median_ms('torch'):.1f} ms, onnxruntime "
        f"{local.median_ms('onnxruntime'):.1f} ms: {local.median_ratio:.2f}x",
    ]
    if report.head is not None:
        lines.append(
            f"  head({tail.split}), batch 1: torch {report.head.median_ms('torch'):.1f} ms, "
            f"onnxruntime {report.head.median_ms('onnxruntime'):.1f} ms: "
            f"{report.head.median_ratio:.2f}x"
        )
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
    return "\n".join(lines + _openvino_lines(report))


def _openvino_lines(report: BackendBenchReport) -> list[str]:
    section = report.openvino
    if section is None:
        return ["  openvino: not installed (pip install 'splitmq[openvino]')"]
    lines = [f"OpenVINO {section.version}, CPU plugin, latency hint, against ONNX Runtime"]
    timed = {"local": report.local, f"tail({report.tail.split})": report.tail.batches["1"]}
    if report.head is not None:
        timed[f"head({report.tail.split})"] = report.head
    for precision, run in section.runs.items():
        speed = ", ".join(
            f"{name} {paired.openvino_median_ms(precision):.1f} ms "
            f"({paired.openvino_vs_onnxruntime[precision]:.2f}x)"
            for name, paired in timed.items()
        )
        lines.append(
            f"  {run.precision}: {speed}; top-1 agreement {run.agreement.top1_agreement:.1%}, "
            f"logits within {run.agreement.max_abs_logit_diff:.1e}"
        )
    return lines
