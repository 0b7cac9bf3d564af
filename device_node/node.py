"""The device node: head(k) here, tail(k) on an edge worker, or everything here when it must.

`DeviceNode.run_request(image)` always returns exactly one `ResultRecord`:

1. the policy picks k; k = n, or no live worker serving (model, k), or a link that is down
   means the whole model runs here;
2. otherwise head(k) runs here (stretched by `slowdown`), the tensor is encoded into a frame and
   published; the node waits for the result until the deadline;
3. a result "ok" with predictions is the record; a timeout, an intermediate the codec refuses,
   a frame over the site's frame limit (never sent), a publish the broker refuses (ended at its
   PUBACK, not at the deadline), an "ok" without predictions, an error/expired/rejected reply,
   the loss of every worker of the split or a disconnect runs tail(k) here from the
   intermediate already computed, and the request is withdrawn from the link, so a late reply
   is dropped, never recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from functools import partial
from typing import Generic, TypeVar

import numpy as np

from device_node.activity import DeviceActivity
from device_node.config import DeviceConfig
from device_node.errors import NotConnectedError
from device_node.link import DeviceLink
from device_node.pending import Outcome, PendingRequest, fallback_reason
from device_node.policies import LockedPolicy
from device_node.records import (
    RACE_LOCAL_MS,
    Fallback,
    LatencyParts,
    PredictionRecord,
    ResultRecord,
)
from device_node.sources import ImageSource, SourceImage
from mqtt_session.homeassistant import announce_node
from schemas.codecs import INPUT_CODECS
from schemas.errors import CodecError, SchemaError
from schemas.frame import SENT_TIMESTAMP, encode_frame
from schemas.messages import ResultMessage
from splitmq_base import __version__
from splitmq_base.gcwatch import GC_PAUSES
from splitting.blocks import Blocks
from splitting.policy import Decision, SplitPolicy

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
#: How long a starting device waits for its first probe's PUBACK (a dead link: it goes on).
FIRST_PROBE_WAIT_S = 1.0
T = TypeVar("T")
TOP_K = 5


def top_predictions(
    model: Blocks, logits: np.ndarray, k: int = TOP_K
) -> tuple[PredictionRecord, ...]:
    """Top-k classes of one sample's logits, scored by softmax probability as the model's
    backend scores them on a worker."""
    scores, indices = model.top(logits.reshape(1, -1), k)
    labels = model.labels
    return tuple(
        PredictionRecord(int(i), labels[int(i)], float(s))
        for s, i in zip(scores[0].tolist(), indices[0].tolist(), strict=True)
    )


@dataclass
class _Timed(Generic[T]):
    """A computation's value and its wall time in ms (slowdown included); `representative`
    is False when the device knows the time is not typical of it (see `_compute`)."""

    value: T
    ms: float
    representative: bool = True


@dataclass
class _Request:
    """What one request has gathered on its way."""

    request_id: str
    image: str
    decision: Decision
    started: float
    deadline_ms: float
    head_ms: float = 0.0
    encode_ms: float = 0.0
    bytes_sent: int = 0
    representative: bool = True  # the head's time is typical of this device
    overrun_ms: float = 0.0  # the device's own delay already added to the deadline
    race_local_ms: float = 0.0  # tail blocks computed here while racing the server


@dataclass(frozen=True)
class _NotSent:
    """Why a request was not published, and what more there is to say (the codec's error)."""

    reason: Fallback
    detail: str = ""


class _SendGate:
    """Between a raced request and the thread that sends it: the request is published only
    while the race still wants it, and the race sees the pending request once it is sent."""

    def __init__(self, pending: PendingRequest | None = None) -> None:
        self.lock = threading.Lock()
        self.withdrawn = False
        self.pending = pending

    def withdraw(self) -> PendingRequest | None:
        """The local tail won: nothing more is sent; the pending request if one was."""
        with self.lock:
            self.withdrawn = True
            return self.pending


class DeviceNode:
    """One device: a model, a policy and an MQTT link (started by the caller)."""

    def __init__(
        self,
        config: DeviceConfig,
        model: Blocks,
        policy: SplitPolicy,
        *,
        link: DeviceLink | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.model = model
        self.policy = policy if isinstance(policy, LockedPolicy) else LockedPolicy(policy)
        self.clock = clock
        self.link = link or DeviceLink(
            config.broker,
            config.device_id,
            topics=config.topics,
            observer=self.policy,
            telemetry_stale_s=config.telemetry_stale_s,
            clock=clock,
        )
        GC_PAUSES.install()
        self._sequence = itertools.count(1)
        self._warm_threads: set[int] = set()
        self._sender_pool: ThreadPoolExecutor | None = None
        self._session = uuid.uuid4().hex[:8]
        self.activity = DeviceActivity(
            config.device_id,
            model.name,
            publish=self.link.publish_state,
            interval_s=config.state_interval_s,
        )
        # Dashboards see the device's state as soon as it connects, and again after a restart
        # of a broker that kept nothing.
        self.link.session.on_connected(self.activity.publish_now)
        self.announcer = announce_node(
            self.link.session,
            config.homeassistant,
            role="device",
            node_id=config.device_id,
            topics=config.topics,
            model=model.name,
            sw_version=__version__,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, wait_s: float | None = 10.0, offline_ok: bool = False) -> DeviceNode:
        """Warm the model up and connect. With `wait_s`, wait that long for the broker and the
        workers' retained state; then, without a broker, raise `LinkError`, or with
        `offline_ok` go on offline: every request runs here ("not_connected") until paho's
        reconnect gets in, and offloading starts from then on. `wait_s=None` never waits."""
        self._warm_this_thread()
        self._measure_local_run()
        if self.config.cpu_cores >= 2:
            self._sender()  # raced requests encode and send there: warm it off the request path
        if not offline_ok or wait_s is None:
            self.link.start(wait_s=wait_s)
        else:
            self.link.start(wait_s=None)
            if not self.link.wait_synced(wait_s):
                settings = self.config.broker
                logger.warning(
                    "device %s: no broker at %s:%d within %g s; running locally until it connects",
                    self.config.device_id,
                    settings.host,
                    settings.port,
                    wait_s,
                )
        if self.link.connected:  # a first uplink sample before the first request
            self._send_probe(self.clock(), wait_s=FIRST_PROBE_WAIT_S)
        return self

    def warm_up_model(self) -> None:
        """Run the whole model once on a blank image: the first call of each block pays
        one-time kernel setup (hundreds of ms on CPU), which must land neither on a request's
        deadline nor in the device times the policy learns from."""
        size = self.model.input_size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        _ = self.model.labels  # loaded on first use: an import of torchvision, ~1.9 s
        x = self.model.preprocess(blank)
        logits = self.model.run_blocks(x, 0, self.model.n)
        top_predictions(self.model, logits[0])
        z = self.model.run_blocks(x, 0, 1)
        # The codecs have first-call costs too (measured: a 110 ms first WebP encode).
        for split, tensor, codec in (
            (0, blank, self.config.input_codec),
            (1, z[0], self.config.codec),
        ):
            encode_frame(
                tensor,
                codec=codec,
                request_id="warm-up",
                model=self.model.name,
                fingerprint=self.model.fingerprint,
                split=split,
            )

    def _measure_local_run(self) -> None:
        """Time one whole-model run now, as a request would run it, and tell the policy: the
        profile was measured at another moment, and a device that offloads from its first
        request would otherwise judge running locally by the profile alone."""
        size = self.model.input_size
        x = self.model.preprocess(np.zeros((size, size, 3), dtype=np.uint8))
        run = self._compute(lambda: self.model.run_blocks(x, 0, self.model.n))
        self._report_device_time(self.model.n, run.ms, run.representative)

    def _warm_this_thread(self) -> None:
        """Warm the model in the calling thread, once: a thread's first run pays its own
        allocator and kernel setup (measured: a head 8x its steady time in a fresh thread)."""
        thread = threading.get_ident()
        if thread not in self._warm_threads:
            self.warm_up_model()
            self._warm_threads.add(thread)

    def stop(self) -> None:
        if self._sender_pool is not None:
            self._sender_pool.shutdown(wait=True)
            self._sender_pool = None
        if self.announcer is not None:
            self.announcer.cancel()
        self.activity.close()
        self.activity.publish_now()
        self.link.stop()

    def __enter__(self) -> DeviceNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests -------------------------------------------------------------------------

    def run(
        self,
        source: ImageSource,
        *,
        requests: int | None = None,
        rate_hz: float | None = None,
        on_record: Callable[[ResultRecord], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[ResultRecord]:
        """Classify images from `source`: `requests` of them (None: until `should_stop`), at
        most `rate_hz` per second (None: back to back)."""
        records: list[ResultRecord] = []
        period = 1.0 / rate_hz if rate_hz else 0.0
        next_start = self.clock()
        for _ in _count_to(requests):
            if should_stop():
                break
            delay = next_start - self.clock()
            if delay > 0:
                time.sleep(delay)
            next_start = max(next_start + period, self.clock()) if period else self.clock()
            record = self.run_request(source.read())
            records.append(record)
            if on_record is not None:
                on_record(record)
        return records

    def run_request(
        self, image: SourceImage | np.ndarray, *, request_id: str | None = None
    ) -> ResultRecord:
        """Classify one image; exactly one record, offloaded or computed here. `request_id`
        defaults to `<device>-<session>-<sequence>`; a given one must be unique too."""
        if not isinstance(image, SourceImage):
            image = SourceImage("image", image)
        self._warm_this_thread()  # once per thread, before the request's clock starts
        started = self.clock()
        decision = self.policy.choose(started)
        self._send_probe(started)
        deadline_ms = self.policy.deadline_ms(decision) or self.config.deadline_ms
        request_id = request_id or self._next_request_id()
        request = _Request(request_id, image.name, decision, started, deadline_ms)
        prepared = self.model.prepare_image(image.pixels)
        k = decision.k
        if k >= self.model.n:
            return self._run_all_here(request, prepared, fallback=None)
        if not self.link.connected:
            return self._run_all_here(request, prepared, fallback=Fallback.NOT_CONNECTED)
        if not self.link.alive_workers(self.model.name, k, started):
            return self._run_all_here(request, prepared, fallback=Fallback.NO_WORKER)
        return self._offload(request, prepared, k)

    # -- the offload path -----------------------------------------------------------------

    def _offload(self, request: _Request, prepared: np.ndarray, k: int) -> ResultRecord:
        z = self._head(request, prepared, k)
        if request.decision.race and self.config.cpu_cores >= 2:
            # Another core encodes and sends while this one starts the local tail at once:
            # a race the server loses costs no encode.
            gate = _SendGate()
            sending = self._sender().submit(self._send, request, prepared, z, k, gate)
            sending.add_done_callback(_log_send_failure)
            return self._race(request, prepared, z, k, gate)
        sent = self._send(request, prepared, z, k, None)
        if isinstance(sent, _NotSent):
            return self._finish_here(request, prepared, z, k, sent.reason, sent.detail, None)
        if request.decision.race:
            return self._race(request, prepared, z, k, _SendGate(sent))
        outcome = self._wait(sent, request.started + request.deadline_ms / 1000.0)
        message = outcome.message
        if message is not None and message.status == "ok" and message.top5:
            return self._offloaded_record(request, k, message, sent, outcome)
        reason, detail = fallback_reason(outcome)
        return self._finish_here(request, prepared, z, k, reason, detail, sent)

    def _send(
        self,
        request: _Request,
        prepared: np.ndarray,
        z: np.ndarray | None,
        k: int,
        gate: _SendGate | None,
    ) -> PendingRequest | _NotSent:
        """Encode and publish head(k)'s output: the pending request, or why it was not sent.
        With a `gate`, publish only while the race still wants it."""
        # The deadline gives the server twice its predicted share; a head or an encode slowed
        # by the device itself (a busy CPU) must not eat into it, or the device gives up on a
        # server that is on time.
        self._extend_deadline(request, request.head_ms)
        try:
            frame = self._encode(request, prepared, z, k)
        except SchemaError as exc:  # CodecError: NaN/Inf under int codecs, fp16 overflow
            logger.warning("request %s: cannot encode split %d: %s", request.request_id, k, exc)
            return _NotSent(Fallback.ENCODE_ERROR, str(exc))
        self._extend_deadline(request, request.head_ms + request.encode_ms)
        self._report_device_time(k, request.head_ms + request.encode_ms, request.representative)
        limit = self.config.max_frame_bytes
        if len(frame) > limit:
            # The broker would refuse it: it would only cost the uplink and the wait.
            detail = f"frame of {len(frame)} bytes, over the limit of {limit}"
            logger.warning("request %s: split %d not sent: %s", request.request_id, k, detail)
            return _NotSent(Fallback.OVERSIZED, detail)
        with gate.lock if gate is not None else contextlib.nullcontext():
            if gate is not None and gate.withdrawn:
                return _NotSent(Fallback.RACE_WON_HERE)
            try:
                pending = self.link.publish_request(
                    frame,
                    request_id=request.request_id,
                    model=self.model.name,
                    split=k,
                    expiry_s=request.deadline_ms / 1000.0,
                    # The least loaded of several live workers, by their telemetry; else shared.
                    worker_id=self.link.least_loaded_worker(self.model.name, k),
                    num_classes=len(self.model.labels),  # replies name this model's classes only
                    # Split 0 sends the prepared image itself: say which recipe made it.
                    prepare_recipe=self.model.prepare_recipe if k == 0 else None,
                )
            except NotConnectedError:
                return _NotSent(Fallback.NOT_CONNECTED)
            request.bytes_sent = len(frame)
            if gate is not None:
                gate.pending = pending
        return pending

    def _sender(self) -> ThreadPoolExecutor:
        """The thread that encodes and sends raced requests, warmed on first use."""
        if self._sender_pool is None:
            self._sender_pool = ThreadPoolExecutor(1, thread_name_prefix="sender")
            self._sender_pool.submit(self._warm_this_thread).result()
        return self._sender_pool

    @staticmethod
    def _extend_deadline(request: _Request, device_ms: float) -> None:
        """Extend the wait by the device's own overrun of its predicted head + encode so far."""
        predicted = request.decision.device_ms
        if predicted is None:
            return
        overrun = max(0.0, device_ms - predicted)
        request.deadline_ms += overrun - request.overrun_ms
        request.overrun_ms = overrun

    def _race(
        self,
        request: _Request,
        prepared: np.ndarray,
        z: np.ndarray | None,
        k: int,
        gate: _SendGate,
    ) -> ResultRecord:
        """tail(k) here, one block at a time, while the server works on the same request: the
        first result wins. The server's is taken between blocks; if the local tail finishes
        first, the request is withdrawn (cancelled if sent, never sent if not yet) and a late
        reply is dropped like any other."""
        x = z if z is not None else self.model.preprocess(prepared)
        t0 = time.perf_counter()
        for index in range(k, self.model.n):
            pending = gate.pending
            answered = self._server_answer(pending) if pending is not None else None
            if pending is not None and answered is not None:
                return self._offloaded_record(request, k, answered[1], pending, answered[0])
            block = self._compute(partial(self.model.run_blocks, x, index, index + 1))
            x = block.value
            request.race_local_ms += block.ms  # the device's energy, spent whoever wins
        pending = gate.withdraw()
        if pending is not None:
            self.link.cancel(pending.request_id)
            answered = self._server_answer(pending)  # a reply that slipped in before the cancel
            if answered is not None:
                return self._offloaded_record(request, k, answered[1], pending, answered[0])
        uplink_s = pending.uplink_s if pending is not None else None
        parts = LatencyParts(
            head_ms=request.head_ms,
            encode_ms=request.encode_ms,
            uplink_ms=(uplink_s or 0.0) * 1000.0,
            local_tail_ms=(time.perf_counter() - t0) * 1000.0,
        )
        top5 = top_predictions(self.model, x[0])
        return self._record(
            request, k, parts, top5, offloaded=False, fallback=Fallback.RACE_WON_HERE
        )

    @staticmethod
    def _server_answer(pending: PendingRequest) -> tuple[Outcome, ResultMessage] | None:
        """The server's usable result if it has come (an error reply does not end a race)."""
        if not pending.future.done():
            return None
        outcome = pending.future.result()
        message = outcome.message
        if message is not None and message.status == "ok" and message.top5:
            return outcome, message
        return None

    def _head(self, request: _Request, prepared: np.ndarray, k: int) -> np.ndarray | None:
        """head(k) on the device; None at split 0, which sends the prepared image itself."""
        if k == 0:
            return None
        x = self.model.preprocess(prepared)
        head = self._compute(lambda: self.model.run_blocks(x, 0, k))
        request.head_ms = head.ms
        request.representative = head.representative
        return head.value

    def _encode(
        self, request: _Request, prepared: np.ndarray, z: np.ndarray | None, k: int
    ) -> bytes:
        # Split 0 sends the prepared image (lossless WebP by default); other splits one
        # sample's tensor, under the codec the policy chose with the split (None: the
        # configured one). A policy's codec is taken as given, or refused with the reason.
        tensor = prepared if z is None else z[0]
        codec = request.decision.codec or (self.config.input_codec if k == 0 else self.config.codec)
        if k == 0 and codec not in INPUT_CODECS:
            raise CodecError(
                f"the policy chose codec {codec!r} for split 0, which sends the image; "
                f"image codecs: {', '.join(sorted(INPUT_CODECS))}"
            )
        encoded = self._compute(
            lambda: encode_frame(
                tensor,
                codec=codec,
                request_id=request.request_id,
                model=self.model.name,
                fingerprint=self.model.fingerprint,
                split=k,
                device_id=self.config.device_id,
                timestamps={SENT_TIMESTAMP: time.time()},
                # What is left of the deadline, from `sent`: the worker skips a request the
                # device gave up on, even one that reached it late (a frozen worker, a resend).
                deadline_ms=max(1.0, request.deadline_ms - (self.clock() - request.started) * 1000),
                zstd_level=self.config.zstd_level,
                jpeg_quality=self.config.jpeg_quality,
            )
        )
        # Encoding runs on the device's CPU too: an emulated weaker device is slower at it.
        request.encode_ms = encoded.ms
        return encoded.value

    def _wait(self, pending: PendingRequest, deadline: float) -> Outcome:
        try:
            return pending.future.result(timeout=max(0.0, deadline - self.clock()))
        except FutureTimeout:
            self.link.cancel(pending.request_id)
            # A result that slipped in between the timeout and the cancel still counts.
            if pending.future.done():
                return pending.future.result()
            return Outcome(None, self.clock(), Fallback.TIMEOUT)

    def _offloaded_record(
        self,
        request: _Request,
        k: int,
        message: ResultMessage,
        pending: PendingRequest,
        outcome: Outcome,
    ) -> ResultRecord:
        timings = message.timings
        top5 = tuple(PredictionRecord(p.index, p.label, p.score) for p in message.top5)
        parts = LatencyParts(
            head_ms=request.head_ms,
            encode_ms=request.encode_ms,
            uplink_ms=(pending.uplink_s or 0.0) * 1000.0,
            queue_ms=timings.queue_ms if timings else 0.0,
            decode_ms=timings.decode_ms if timings else 0.0,
            compute_ms=timings.compute_ms if timings else 0.0,
        )
        return self._record(
            request,
            k,
            parts,
            top5,
            offloaded=True,
            fallback=None,
            worker=message.worker_id,
            end=outcome.received_at,
        )

    # -- computing here -------------------------------------------------------------------

    def _run_all_here(
        self, request: _Request, prepared: np.ndarray, *, fallback: Fallback | None
    ) -> ResultRecord:
        x = self.model.preprocess(prepared)
        n = self.model.n
        logits = self._compute(lambda: self.model.run_blocks(x, 0, n))
        self._report_device_time(n, logits.ms, logits.representative)
        parts = LatencyParts(head_ms=logits.ms)
        top5 = top_predictions(self.model, logits.value[0])
        return self._record(request, n, parts, top5, offloaded=False, fallback=fallback)

    def _finish_here(
        self,
        request: _Request,
        prepared: np.ndarray,
        z: np.ndarray | None,
        k: int,
        reason: Fallback,
        detail: str,
        pending: PendingRequest | None,
    ) -> ResultRecord:
        """tail(k) here, from the intermediate already computed (split 0: from the image)."""
        start = z if z is not None else self.model.preprocess(prepared)
        logits = self._compute(lambda: self.model.run_blocks(start, k, self.model.n))
        parts = LatencyParts(
            head_ms=request.head_ms,
            encode_ms=request.encode_ms,
            uplink_ms=(pending.uplink_s or 0.0) * 1000.0 if pending else 0.0,
            local_tail_ms=logits.ms,
        )
        top5 = top_predictions(self.model, logits.value[0])
        return self._record(
            request, k, parts, top5, offloaded=False, fallback=reason, detail=detail
        )

    def _compute(self, run: Callable[[], T]) -> _Timed[T]:
        """Run model code and, for an emulated weaker device, sleep (slowdown - 1) times as long.
        A run that a garbage-collector pause stretched is marked as not representative."""
        paused = GC_PAUSES.total_s
        t0 = time.perf_counter()
        value = run()
        elapsed = time.perf_counter() - t0
        gc_s = GC_PAUSES.total_s - paused
        if self.config.slowdown > 1.0:
            time.sleep(max(0.0, elapsed - gc_s) * (self.config.slowdown - 1.0))
        ms = (time.perf_counter() - t0) * 1000.0
        return _Timed(value, ms, representative=not GC_PAUSES.stretched(gc_s, elapsed))

    def _report_device_time(self, k: int, ms: float, representative: bool) -> None:
        """Tell the policy a device time; one from a thread that was never warmed (its first
        runs pay one-time setup) is not typical."""
        warm = threading.get_ident() in self._warm_threads
        self.policy.on_device_time(k, ms, self.clock(), representative=representative and warm)

    # -- records --------------------------------------------------------------------------

    def _record(
        self,
        request: _Request,
        k: int,
        parts: LatencyParts,
        top5: tuple[PredictionRecord, ...],
        *,
        offloaded: bool,
        fallback: Fallback | None,
        detail: str = "",
        worker: str | None = None,
        end: float | None = None,
    ) -> ResultRecord:
        finished = end if end is not None else self.clock()
        total_ms = (finished - request.started) * 1000.0
        parts = replace(parts, other_ms=max(0.0, total_ms - parts.accounted_ms()))
        # After a failed offload the tail ran here, after the wait: the device's compute. A lost
        # race ran it beside the wait, so its latency already bounds the server's from below.
        waited = fallback is not None and fallback != Fallback.RACE_WON_HERE
        tail = parts.local_tail_ms if waited else 0.0
        self.policy.on_result(k, offloaded, total_ms, finished, local_tail_ms=tail)
        record = ResultRecord(
            request_id=request.request_id,
            device_id=self.config.device_id,
            image=request.image,
            split=k,
            offloaded=offloaded,
            fallback=fallback,
            bytes_sent=request.bytes_sent,
            latency=parts,
            total_ms=total_ms,
            top1=top5[0],
            top5=top5,
            worker_id=worker,
            chosen_split=request.decision.k,
            reason=request.decision.reason,
            predicted_ms=request.decision.expected_ms,
            uplink_bps=request.decision.uplink_bps,
            started_s=request.started,
            fallback_detail=detail,
            extra={RACE_LOCAL_MS: request.race_local_ms} if request.race_local_ms else {},
        )
        self.activity.record(record)
        return record

    def _send_probe(self, now: float, *, wait_s: float = 0.0) -> None:
        nbytes = self.policy.probe_bytes(now)
        if nbytes > 0 and self.config.probe.enabled:
            self.link.publish_probe(min(nbytes, self.config.probe.max_bytes), wait_s=wait_s)

    def _next_request_id(self) -> str:
        return f"{self.config.device_id}-{self._session}-{next(self._sequence)}"


def _log_send_failure(sending: Future[PendingRequest | _NotSent]) -> None:
    """A raced request's sender failed unforeseen: the race then ends here; say why."""
    error = sending.exception()
    if error is not None:
        logger.error("sending a raced request failed: %r", error)


def _count_to(limit: int | None) -> Iterator[int]:
    return iter(range(limit)) if limit is not None else itertools.count()
