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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_worker.runner import candidate_splits
from splitmq.reports import machine
from splitmq.worker_bench import _jpeg_bytes as jpeg_bytes
from splitmq.worker_bench import _split_inputs as split_inputs
from splitmq.worker_bench import best_middle
from splitting.images import sample_images
from splitting.onnx_blocks import OnnxBlocks
from splitting.onnx_export import ensure_exported
from splitting.partition import SplitModel
from splitting.registry import DEFAULT_MODEL, load_model


@dataclass(frozen=True)
class BackendBenchOptions:
    model: str = DEFAULT_MODEL
    rounds: int = 5
    calls: int = 20  # timed calls per backend per round (the round's figure is their median)
    batch: int = 8
    export_dir: Path | None = None


def run_backend_bench(options: BackendBenchOptions) -> dict[str, Any]:
    model = load_model(options.model)
    blocks = OnnxBlocks(
        ensure_exported(model, options.export_dir), expected_fingerprint=model.fingerprint
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return {
                "bench": "backends",
                "model": model.name,
                "fingerprint": model.fingerprint,
                "settings": {**asdict(options), "export_dir": str(options.export_dir)},
                "versions": _versions(),
                "machine": machine(),
                "local": _local(model, blocks, options),
                "tail": _tail(model, blocks, options),
                "agreement": _agreement(model, blocks),
            }
    finally:
        torch.set_num_threads(previous)


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def _median_ms(call: Callable[[], object], calls: int) -> float:
    call()  # a first call pays one-time setup that no request pays twice
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def _rounds(
    eager: Callable[[], object], onnx: Callable[[], object], options: BackendBenchOptions
) -> dict[str, Any]:
    """Alternating rounds of both; each round's ratio is eager ms / onnxruntime ms."""
    rows = []
    for _ in range(options.rounds):
        eager_ms = _median_ms(eager, options.calls)
        onnx_ms = _median_ms(onnx, options.calls)
        rows.append({"torch_ms": eager_ms, "onnxruntime_ms": onnx_ms, "ratio": eager_ms / onnx_ms})
    return {"rounds": rows, "median_ratio": statistics.median(r["ratio"] for r in rows)}


def _local(model: SplitModel, blocks: OnnxBlocks, options: BackendBenchOptions) -> dict[str, Any]:
    prepared = model.prepare_image(sample_images()[0][1])
    x = model.preprocess(prepared)
    x_np = x.numpy()
    return _rounds(
        lambda: model.head(x, model.n), lambda: blocks.run_blocks(x_np, 0, model.n), options
    )


def _tail(model: SplitModel, blocks: OnnxBlocks, options: BackendBenchOptions) -> dict[str, Any]:
    splits = [k for k in candidate_splits(model, "int5") if 0 < k < model.n]
    inputs = {k: split_inputs(model, k, "int5") for k in splits}
    k = best_middle(splits, {s: i.frame_bytes for s, i in inputs.items()}, jpeg_bytes(model))
    tensors = inputs[k].tensors
    per_batch = {
        str(batch): _tail_at(model, blocks, k, tensors, batch, options)
        for batch in sorted({1, options.batch})
    }
    best_torch = max(p["torch_per_s"] for p in per_batch.values())
    best_onnx = max(p["onnxruntime_per_s"] for p in per_batch.values())
    return {
        "split": k,
        "batches": per_batch,
        "best_torch_per_s": best_torch,
        "best_onnxruntime_per_s": best_onnx,
        "throughput_ratio": best_onnx / best_torch,
    }


def _tail_at(
    model: SplitModel,
    blocks: OnnxBlocks,
    k: int,
    tensors: list[np.ndarray],
    batch: int,
    options: BackendBenchOptions,
) -> dict[str, Any]:
    z_np = np.stack([tensors[i % len(tensors)] for i in range(batch)])
    z = torch.from_numpy(z_np)
    timed = _rounds(lambda: model.tail(z, k), lambda: blocks.tail(z_np, k), options)
    rounds = timed["rounds"]
    return {
        **timed,
        "torch_per_s": batch * 1000.0 / statistics.median(r["torch_ms"] for r in rounds),
        "onnxruntime_per_s": batch
        * 1000.0
        / statistics.median(r["onnxruntime_ms"] for r in rounds),
    }


def _agreement(model: SplitModel, blocks: OnnxBlocks) -> dict[str, Any]:
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
    return {"top1_agreement": agreed / total, "pairs": total, "max_abs_logit_diff": worst}


def format_report(report: dict[str, Any]) -> str:
    local, tail, agreement = report["local"], report["tail"], report["agreement"]
    lines = [
        f"{report['model']} on one thread: eager PyTorch against ONNX Runtime",
        f"  local, batch 1: torch {_ms(local, 'torch_ms')} ms, onnxruntime "
        f"{_ms(local, 'onnxruntime_ms')} ms: {local['median_ratio']:.2f}x",
    ]
    for batch, row in tail["batches"].items():
        lines.append(
            f"  tail({tail['split']}), batch {batch}: torch {row['torch_per_s']:.0f}/s, "
            f"onnxruntime {row['onnxruntime_per_s']:.0f}/s"
        )
    lines.append(f"  tail throughput, best of each: {tail['throughput_ratio']:.2f}x")
    lines.append(
        f"  top-1 agreement (lossless, every split): {agreement['top1_agreement']:.1%} of "
        f"{agreement['pairs']}, logits within {agreement['max_abs_logit_diff']:.1e}"
    )
    return "\n".join(lines)


def _ms(section: dict[str, Any], key: str) -> str:
    return f"{statistics.median(r[key] for r in section['rounds']):.1f}"
