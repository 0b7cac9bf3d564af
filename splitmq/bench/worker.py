"""Worker benchmark: what batching buys a real tail, and what it changes in the answer.

Three measurements, per split (default: lite0's inner natural bottlenecks under int5, the
devices' decision codec), each with batching on (`max_batch` 8) and off (1):

1. In process, no MQTT: requests are decoded, batched, run through tail(k) and their results
   encoded to JSON exactly as the worker does, back to back. `per_s` is requests per second
   and `overhead_share` the share of that time spent outside the tail (decode, result encode).
2. Through a real worker and broker: an `edge-worker` process (CPU, its own torch threads) and
   a light device that publishes a burst of real frames and collects every reply. `per_s` is
   the requests answered per second from the first publish to the last reply, and
   `overhead_share` = 1 - (tail compute time, summed over the batches the replies report) /
   that span: MQTT, decode, encode and the worker's hand-offs as a share of its busy time.
3. The answer: each bundled sample image's logits at batch 1 against the same inputs run in
   batches of 8 (mixed images), on the decoded frames the worker would see: top-1 agreement,
   max |logit difference| and the share of samples whose logits are bit-identical.

`speedup` is batched per_s / unbatched per_s, measured in the same run.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from broker.launcher import MosquittoBroker
from device_node.link import DeviceLink
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import ModelTailRunner, candidate_splits
from mqtt_session.client import BrokerSettings
from schemas.frame import Frame, encode_frame
from schemas.messages import ResultMessage, ServerTimings, encode_message
from schemas.topics import Topics
from splitmq.bench.errors import BenchError, BenchSettingsError
from splitmq.bench.light_device import LightDevice
from splitmq.bench.load import LoadGenerator
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq.reports import Machine, machine
from splitmq.worker_process import connected, wait_until_serving, worker_process
from splitmq_base.models import StrictModel
from splitting.blocks import Blocks
from splitting.images import sample_images
from splitting.onnx_blocks import OnnxBlocks
from splitting.onnx_export import ensure_exported
from splitting.partition import SplitModel
from splitting.registry import load_model
from splitting.torch_blocks import TorchBlocks

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_CODEC = "int5"
WORKER_START_S = 120.0
REPLY_TIMEOUT_S = 300.0
ROUNDS = 3


SPEEDUP_TARGET = 3.0
OVERHEAD_TARGET = 0.15


class WorkerBenchOptions(BenchOptions):
    model: str = DEFAULT_MODEL
    #: () = the inner natural bottlenecks under `codec`
    splits: tuple[int, ...] = Field(default=(), strict=False)
    codec: str = DEFAULT_CODEC
    max_batch: int = 8
    max_wait_ms: float = 2.0
    requests: int = 240  # in process, per split and batch setting
    mqtt_requests: int = 240  # through the worker, per split and batch setting
    mqtt: bool = True
    torch_threads: int = 1
    queue_capacity: int = 64
    backend: Literal["torch", "onnxruntime"] = "torch"
    export_dir: Path | None = Field(default=None, strict=False)

    @model_validator(mode="after")
    def _check(self) -> WorkerBenchOptions:
        if self.max_batch < 2:
            raise BenchSettingsError("--max-batch must be >= 2 (batch 1 is the baseline)")
        if self.requests < self.max_batch or self.mqtt_requests < self.max_batch:
            raise BenchSettingsError("request counts must be at least --max-batch")
        if self.torch_threads < 1:
            raise BenchSettingsError("--torch-threads must be >= 1")
        return self


class Throughput(StrictModel):
    """One batch setting's figures at one split (rates over the merged rounds)."""

    per_s: float
    requests: int
    overhead_share: float
    compute_share: float
    mean_batch: float
    decode_ms: float
    encode_ms: float | None = Field(default=None, description="in process only")
    compute_ms_per_request: float | None = Field(default=None, description="in process only")


class Comparison(StrictModel):
    unbatched: Throughput
    batched: Throughput
    speedup: float = Field(description="batched per_s / unbatched per_s, in the same run")


class Answer(StrictModel):
    """Each sample's logits alone against the same inputs in batches."""

    samples: int
    batch: int
    top1_agreement: float
    max_abs_logit_diff: float
    bit_identical_share: float


class SplitFigures(StrictModel):
    frame_bytes: int
    in_process: Comparison
    answer: Answer
    mqtt: Comparison | None = None


class WorkerTargets(StrictModel):
    speedup: float = SPEEDUP_TARGET
    overhead_share: float = OVERHEAD_TARGET
    speedup_met: bool
    overhead_met: bool


class WorkerReport(BenchReport):
    model: str
    codec: str
    splits: list[int]
    best_middle_split: int
    jpeg_bytes: int
    max_batch: int
    max_wait_ms: float
    torch_threads: int
    backend: str
    through: str = Field(description="where the headline figures come from: mqtt or in_process")
    batched: Throughput
    unbatched: Throughput
    speedup: float
    overhead_share: float
    answer: Answer
    per_split: dict[str, SplitFigures]
    machine: Machine
    targets: WorkerTargets


@dataclass
class SplitInputs:
    """One split's inputs: block k-1's output for each sample image, and its frame."""

    model: SplitModel
    k: int
    codec: str
    tensors: list[np.ndarray]
    frames: list[bytes] = field(init=False)
    frame_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.frames = [self.frame(i, f"sample-{i}") for i in range(len(self.tensors))]
        self.frame_bytes = int(np.median([len(f) for f in self.frames]))

    def frame(self, i: int, request_id: str) -> bytes:
        """The frame of sample `i % samples` under `request_id`."""
        return encode_frame(
            self.tensors[i % len(self.tensors)],
            codec=self.codec,
            request_id=request_id,
            model=self.model.name,
            fingerprint=self.model.fingerprint,
            split=self.k,
        )


def run_worker_bench(options: WorkerBenchOptions) -> WorkerReport:
    torch.set_num_threads(options.torch_threads)
    model = load_model(options.model)
    splits = list(options.splits) or [k for k in candidate_splits(model, options.codec) if k > 0]
    bad = [k for k in splits if not 0 < k < model.n]
    if bad:
        raise BenchSettingsError(f"{model.name} has inner splits 1..{model.n - 1}, got {bad}")
    inputs = {k: split_inputs(model, k, options.codec) for k in splits}
    jpeg = jpeg_bytes(model)
    best = best_middle(splits, {k: i.frame_bytes for k, i in inputs.items()}, jpeg)
    runner = ModelTailRunner(
        {model.name: model},
        {model.name: splits},
        device="cpu",
        backend=options.backend,
        export_dir=options.export_dir,
        threads=options.torch_threads,
    )
    runner.warm_up()
    tail = _tail_of(options, model)
    per_split = {str(k): _in_process(options, model, runner, inputs[k], tail) for k in splits}
    if options.mqtt:
        for k, by_batch in measure_through_worker(options, inputs).items():
            mqtt = _compare(by_batch, options.max_batch)
            per_split[str(k)] = per_split[str(k)].model_copy(update={"mqtt": mqtt})
    return _report(options, model.name, splits, best, jpeg, per_split)


def _report(
    options: WorkerBenchOptions,
    model: str,
    splits: list[int],
    best: int,
    jpeg_bytes: int,
    per_split: dict[str, SplitFigures],
) -> WorkerReport:
    """The figures of every split, headed by the best middle split's (through MQTT where
    measured there)."""
    headline = per_split[str(best)]
    source = headline.mqtt or headline.in_process
    overhead = source.batched.overhead_share
    return WorkerReport(
        provenance=Provenance.collect(options),
        model=model,
        codec=options.codec,
        splits=splits,
        best_middle_split=best,
        jpeg_bytes=jpeg_bytes,
        max_batch=options.max_batch,
        max_wait_ms=options.max_wait_ms,
        torch_threads=options.torch_threads,
        backend=options.backend,
        through="mqtt" if headline.mqtt else "in_process",
        batched=source.batched,
        unbatched=source.unbatched,
        speedup=source.speedup,
        overhead_share=overhead,
        answer=headline.answer,
        per_split=per_split,
        machine=machine(),
        targets=WorkerTargets(
            speedup_met=source.speedup >= SPEEDUP_TARGET,
            overhead_met=overhead <= OVERHEAD_TARGET,
        ),
    )


Tail = Callable[[np.ndarray, int], np.ndarray]


def _tail_of(options: WorkerBenchOptions, model: SplitModel) -> Tail:
    """tail(k) on a numpy batch, on the backend the worker's batches run on."""
    blocks: Blocks = TorchBlocks(model)
    if options.backend == "onnxruntime":
        export = ensure_exported(model, options.export_dir)
        blocks = OnnxBlocks(export, expected_fingerprint=model.fingerprint, threads=1)
    return lambda z, k: blocks.run_blocks(z, k, blocks.n)


def _in_process(
    options: WorkerBenchOptions,
    model: SplitModel,
    runner: ModelTailRunner,
    inputs: SplitInputs,
    tail: Tail,
) -> SplitFigures:
    """One split's in-process comparison and the answer under batching."""
    settings = (1, options.max_batch)
    for b in settings:  # the first calls of a new shape pay one-time setup
        measure_in_process(runner, model.name, inputs.k, inputs.frames, b, 2 * options.max_batch)
    rounds = _rounds(
        functools.partial(measure_in_process, runner, model.name, inputs.k, inputs.frames),
        settings,
        options.requests,
    )
    return SplitFigures(
        frame_bytes=inputs.frame_bytes,
        in_process=_compare(rounds, options.max_batch),
        answer=answer_under_batching(
            model.name, runner, tail, inputs.k, inputs.frames, options.max_batch
        ),
    )


def best_middle(splits: Sequence[int], frame_bytes: dict[int, int], jpeg_bytes: int) -> int:
    """The device's default fixed split (device_node.policies.best_bottleneck's rule): the
    earliest inner split whose frame is at most half split 0's JPEG, else the smallest."""
    small = [k for k in sorted(splits) if frame_bytes[k] <= jpeg_bytes / 2]
    return small[0] if small else min(splits, key=lambda k: frame_bytes[k])


def split_inputs(model: SplitModel, k: int, codec: str) -> SplitInputs:
    tensors = []
    for _, image in sample_images():
        x = model.preprocess(model.prepare_image(image))
        with torch.inference_mode():
            tensors.append(model.head(x, k)[0].numpy())
    return SplitInputs(model, k, codec, tensors)


def jpeg_bytes(model: SplitModel) -> int:
    sizes = [
        len(
            encode_frame(
                model.prepare_image(image),
                codec="jpeg",
                request_id="probe",
                model=model.name,
                fingerprint=model.fingerprint,
                split=0,
            )
        )
        for _, image in sample_images()
    ]
    return int(np.median(sizes))


# -- 1. in process ----------------------------------------------------------------------------


def measure_in_process(
    runner: ModelTailRunner,
    model: str,
    k: int,
    frames: Sequence[bytes],
    batch: int,
    requests: int,
) -> dict[str, Any]:
    """Decode, tail and result-encode `requests` frames in batches of `batch`, timed."""
    decode_s = compute_s = encode_s = 0.0
    started = time.perf_counter()
    done = 0
    while done < requests:
        size = min(batch, requests - done)
        chunk = [frames[(done + i) % len(frames)] for i in range(size)]
        t0 = time.perf_counter()
        decoded: list[Frame] = [runner.decode(payload, model, k) for payload in chunk]
        t1 = time.perf_counter()
        top5 = runner.run_batch(model, k, decoded)
        t2 = time.perf_counter()
        for frame, predictions in zip(decoded, top5, strict=True):
            encode_message(_result(frame, predictions, (t2 - t1) * 1000.0, size))
        t3 = time.perf_counter()
        decode_s, compute_s, encode_s = decode_s + t1 - t0, compute_s + t2 - t1, encode_s + t3 - t2
        done += size
    total_s = time.perf_counter() - started
    return {
        "per_s": requests / total_s,
        "overhead_share": (decode_s + encode_s) / total_s,
        "compute_share": compute_s / total_s,
        "decode_ms": decode_s * 1000.0 / requests,
        "encode_ms": encode_s * 1000.0 / requests,
        "compute_ms_per_request": compute_s * 1000.0 / requests,
        "mean_batch": float(batch),
        "requests": requests,
    }


def _rounds(
    measure: Callable[[int, int], dict[str, Any]], settings: Sequence[int], requests: int
) -> dict[int, dict[str, Any]]:
    """`measure(batch, n)` for each setting in ROUNDS alternating rounds, merged: a machine whose
    speed drifts (shared cores) slows both settings alike instead of whichever ran last."""
    parts: dict[int, list[dict[str, Any]]] = {b: [] for b in settings}
    share = max(1, requests // ROUNDS)
    for _ in range(ROUNDS):
        for b in settings:
            parts[b].append(measure(b, share))
    return {b: _merge(runs) for b, runs in parts.items()}


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one setting as one run: rates from total requests over total time, shares
    and per-request times weighted by each round's time or requests."""
    requests = sum(r["requests"] for r in runs)
    seconds = [r["requests"] / r["per_s"] for r in runs]
    total_s = sum(seconds)
    merged: dict[str, Any] = {"per_s": requests / total_s, "requests": requests}
    for key in runs[0]:
        if key in merged:
            continue
        if key.endswith("_share"):
            merged[key] = sum(r[key] * t for r, t in zip(runs, seconds, strict=True)) / total_s
        else:
            merged[key] = sum(r[key] * r["requests"] for r in runs) / requests
    return merged


def _result(frame: Frame, predictions: list[Any], compute_ms: float, size: int) -> ResultMessage:
    return ResultMessage(
        request_id=frame.header.request_id,
        status="ok",
        model=frame.header.model,
        split=frame.header.split,
        worker_id="bench",
        top5=predictions,
        timings=ServerTimings(queue_ms=0.0, decode_ms=0.0, compute_ms=compute_ms, batch_size=size),
    )


def _compare(by_batch: dict[int, dict[str, Any]], max_batch: int) -> Comparison:
    unbatched, batched = by_batch[1], by_batch[max_batch]
    return Comparison(
        unbatched=Throughput.model_validate(unbatched),
        batched=Throughput.model_validate(batched),
        speedup=batched["per_s"] / unbatched["per_s"],
    )


# -- 3. the answer ----------------------------------------------------------------------------


def answer_under_batching(
    model: str,
    runner: ModelTailRunner,
    tail: Tail,
    k: int,
    frames: Sequence[bytes],
    batch: int,
) -> Answer:
    """Logits of every sample alone against the same decoded inputs in batches of `batch`."""
    tensors = [runner.decode(f, model, k).tensor.astype(np.float32) for f in frames]
    alone = np.concatenate([tail(t[None], k) for t in tensors])
    chunks = [np.stack(tensors[i : i + batch]) for i in range(0, len(tensors), batch)]
    batched = np.concatenate([tail(chunk, k) for chunk in chunks])
    alone, batched = alone.reshape(len(tensors), -1), batched.reshape(len(tensors), -1)
    diff = np.abs(alone - batched)
    return Answer(
        samples=len(tensors),
        batch=batch,
        top1_agreement=float(np.mean(alone.argmax(1) == batched.argmax(1))),
        max_abs_logit_diff=float(diff.max()),
        bit_identical_share=float(np.mean(diff.max(axis=1) == 0)),
    )


# -- 2. through a real worker and broker ------------------------------------------------------


def measure_through_worker(
    options: WorkerBenchOptions, inputs: dict[int, SplitInputs]
) -> dict[int, dict[int, dict[str, Any]]]:
    """split -> max_batch -> figures. One worker process per batch setting, both running, each
    under its own topic prefix; their bursts alternate, so only one computes at a time."""
    settings = (1, options.max_batch)
    prefixes = {b: Topics(f"b{b}/splitmq") for b in settings}
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(MosquittoBroker())
        broker_settings = BrokerSettings(host=broker.host, port=broker.port)
        load = LoadGenerator()
        devices: dict[int, LightDevice] = {}
        for b in settings:
            worker_id = f"bench-worker-b{b}"
            exited = stack.enter_context(
                _worker_process(options, broker_settings, worker_id, b, prefixes[b])
            )
            _wait_for_worker(
                broker_settings, options, worker_id, prefixes[b], sorted(inputs), exited
            )
            device = LightDevice(
                broker_settings, f"bench-device-b{b}", topics=prefixes[b], on_reply=load.on_reply
            )
            devices[b] = device.start()
            stack.callback(device.stop)
        figures: dict[int, dict[int, dict[str, Any]]] = {}
        bursts = itertools.count()
        for k, split_inputs in inputs.items():

            def burst(b: int, n: int, split_inputs: SplitInputs = split_inputs) -> dict[str, Any]:
                tag = f"b{b}-{next(bursts)}"
                return _burst(load, devices[b], options, split_inputs, n, tag=tag)

            for b in settings:  # warm-up: every new shape's first calls pay one-time setup
                burst(b, 2 * options.max_batch)
            figures[k] = _rounds(burst, settings, options.mqtt_requests)
    return figures


def _burst(
    load: LoadGenerator,
    device: LightDevice,
    options: WorkerBenchOptions,
    inputs: SplitInputs,
    n: int,
    *,
    tag: str,
) -> dict[str, Any]:
    topic = device.topics.request(options.model, inputs.k, device.device_id)
    ids = [f"{tag}-k{inputs.k}-{i}" for i in range(n)]
    started = load.burst(device, topic, [(rid, inputs.frame(i, rid)) for i, rid in enumerate(ids)])
    if not load.wait(ids, REPLY_TIMEOUT_S):
        missing = load.tally(ids).lost
        raise BenchError(f"{missing} of {len(ids)} requests at split {inputs.k} unanswered")
    tally = load.tally(ids)
    others = {s: c for s, c in tally.statuses().items() if s != "ok"}
    if others:
        raise BenchError(f"split {inputs.k}: replies other than ok: {others}")
    timings = tally.timings()
    span_s = max(r.received_at for r in tally.replies.values()) - started
    compute_s = sum(t.compute_ms / t.batch_size for t in timings) / 1000.0
    return {
        "per_s": len(ids) / span_s,
        "overhead_share": max(0.0, 1.0 - compute_s / span_s),
        "compute_share": min(1.0, compute_s / span_s),
        "mean_batch": float(np.mean([t.batch_size for t in timings])),
        "decode_ms": float(np.mean([t.decode_ms for t in timings])),
        "requests": len(ids),
    }


def _worker_config(
    options: WorkerBenchOptions,
    settings: BrokerSettings,
    worker_id: str,
    max_batch: int,
    topics: Topics,
) -> WorkerConfig:
    return WorkerConfig(
        broker=settings,
        worker_id=worker_id,
        topic_prefix=topics.prefix,
        models=[ModelEntry(name=options.model)],
        device="cpu",
        max_batch=max_batch,
        max_wait_ms=options.max_wait_ms if max_batch > 1 else 0.0,
        queue_capacity=options.queue_capacity,
        torch_threads=options.torch_threads,
        backend=options.backend,
        export_dir=options.export_dir,
    )


def _worker_process(
    options: WorkerBenchOptions,
    settings: BrokerSettings,
    worker_id: str,
    max_batch: int,
    topics: Topics,
) -> contextlib.AbstractContextManager[Callable[[], int | None]]:
    config = _worker_config(options, settings, worker_id, max_batch, topics)
    return worker_process(
        config,
        env={"OMP_NUM_THREADS": str(options.torch_threads)},
        stdout=subprocess.DEVNULL,
        quiet=True,
    )


def _wait_for_worker(
    settings: BrokerSettings,
    options: WorkerBenchOptions,
    worker_id: str,
    topics: Topics,
    splits: Sequence[int],
    exited: Any,
) -> None:
    model = options.model
    link = DeviceLink(settings, f"observer-{worker_id}", topics=topics)
    with connected(link, error=BenchError) as observer:
        wait_until_serving(
            lambda wait_s: observer.wait_for_workers(
                lambda: worker_id in observer.alive_workers(model, splits[-1]), wait_s
            ),
            exited,
            timeout_s=WORKER_START_S,
            error=BenchError,
        )


# -- output -----------------------------------------------------------------------------------


def format_report(result: WorkerReport) -> str:
    lines = [
        f"worker benchmark: {result.model}, {result.codec} frames, CPU, "
        f"{result.torch_threads} thread(s) on {result.backend}, max_batch {result.max_batch} vs 1",
        "",
        "  k   bytes | in process: b1/s  bN/s  speedup ovh | mqtt: b1/s  bN/s  speedup ovh  "
        "mean_b | top-1  max|dlogit|  bit-identical",
    ]
    lines += [_split_row(k, entry) for k, entry in result.per_split.items()]
    lines += [
        "",
        f"  best middle split {result.best_middle_split} ({result.through}): "
        f"speedup {result.speedup:.2f}x, overhead_share {result.overhead_share:.1%}",
    ]
    return "\n".join(lines)


def _split_row(k: str, entry: SplitFigures) -> str:
    ip, mq, answer = entry.in_process, entry.mqtt, entry.answer
    mqtt_cols = (
        f"{mq.unbatched.per_s:6.1f} {mq.batched.per_s:6.1f} "
        f"{mq.speedup:6.2f}x {mq.batched.overhead_share:5.1%} "
        f"{mq.batched.mean_batch:5.1f}"
        if mq
        else "   (not run)"
    )
    return (
        f"  {k:>2} {entry.frame_bytes:7d} | {ip.unbatched.per_s:6.1f} "
        f"{ip.batched.per_s:6.1f} {ip.speedup:6.2f}x "
        f"{ip.batched.overhead_share:5.1%} | {mqtt_cols} | "
        f"{answer.top1_agreement:5.1%} {answer.max_abs_logit_diff:10.2e} "
        f"{answer.bit_identical_share:8.1%}"
    )
