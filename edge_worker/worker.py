"""The edge worker: queue -> batch -> decode -> tail(k) -> reply, off paho's network thread.

    with EdgeWorker(config) as worker:      # connects, subscribes, publishes "online"
        worker.wait_stopped()               # or do other things; __exit__ stops it cleanly

Every request taken from the queue ends with exactly one reply when it names a response topic:
"ok" with the top-5, timings and whether it was computed bit-exactly (a request that asks for
it, with the `splitmq-exact` user property, runs alone on the exact path); "error" with the
code of what was wrong with it; "expired" when it waited past its deadline (not computed); or
"rejected" if the queue overflowed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import torch

from edge_worker.batching import RequestQueue
from edge_worker.catalog import catalog_payloads
from edge_worker.config import WorkerConfig
from edge_worker.decoding import DecodePool, Outcome
from edge_worker.errors import (
    ComputeError,
    PrepareMismatchError,
    RequestError,
    WorkerStateError,
)
from edge_worker.link import InboundRequest, NodeState, UnroutableMessage, WorkerLink
from edge_worker.runner import (
    Backend,
    EchoTailRunner,
    ModelTailRunner,
    TailRunner,
    echo_model_info,
    warm_up_frames,
)
from edge_worker.telemetry import TelemetryReporter, WorkerStats
from mqtt_session.homeassistant import announce_node
from schemas.errors import SchemaError
from schemas.frame import MAX_ID_CHARS, SENT_TIMESTAMP, Frame
from schemas.messages import (
    ErrorInfo,
    Prediction,
    ResultMessage,
    ServerTimings,
    StatusMessage,
    encode_message,
)
from splitmq_base import __version__
from splitting.pixels import RECIPE_VERSION

LOG = logging.getLogger(__name__)
FailureStatus = Literal["error", "expired", "rejected"]
UNKNOWN_REQUEST_ID = "unknown"
MAX_ERROR_MESSAGE_CHARS = 512


@dataclass(frozen=True)
class _Taken:
    """When the compute thread took a batch: monotonic (against receipt) and wall clock
    (against the device's `sent` timestamp)."""

    monotonic: float
    wall: float


@dataclass(frozen=True)
class _Decoded:
    request: InboundRequest
    frame: Frame
    queue_ms: float
    decode_ms: float


def build_runner(config: WorkerConfig) -> TailRunner:
    """The runner the config asks for ("model": real tails; "echo": the transport benchmark's)."""
    limits = config.frame_limits.limits()
    if config.runner == "echo":
        infos = [echo_model_info(entry.name) for entry in config.models]
        served = {  # an explicit split list serves a subset, as with real models
            info.name: entry.splits if isinstance(entry.splits, list) else list(range(info.n))
            for info, entry in zip(infos, config.models, strict=True)
        }
        return EchoTailRunner(infos, limits=limits, served=served)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    return ModelTailRunner.from_config(config)


class EdgeWorker:
    """One worker process's runtime: an MQTT link, a bounded queue, a compute thread, telemetry."""

    def __init__(self, config: WorkerConfig, runner: TailRunner | None = None) -> None:
        self.config = config
        self.worker_id = config.worker_id
        self.runner = runner if runner is not None else build_runner(config)
        self.max_batch, self.max_wait_ms = config.batching(self.runner.device)
        self.queue: RequestQueue[InboundRequest] = RequestQueue(
            config.queue_capacity, config.max_held_bytes
        )
        self._warned_over_capacity = False
        self.decoder = DecodePool(
            config.decode_threads,
            config.decode_budget_ms / 1000.0,
            max_wait_s=config.decode_max_wait_ms / 1000.0,
            name=f"decode-{config.worker_id}",
        )
        self._catalogs = catalog_payloads(self.runner)
        self.stats = WorkerStats(window_s=config.telemetry_interval_s)
        self.link = WorkerLink(
            config.broker,
            worker_id=config.worker_id,
            topics=config.topics,
            share_group=config.share_group,
            served=self.runner.served(),
            receive_maximum=config.queue_capacity,
            sink=self._enqueue,
            on_unroutable=self._unroutable,
            status_payload=self._status_payload,
            on_connected=self._connected,
        )
        self.telemetry = TelemetryReporter(
            self.stats,
            worker_id=config.worker_id,
            device=self.runner.device,
            models=self.runner.served(),
            queue_capacity=config.queue_capacity,
            max_batch=self.max_batch,
            interval_s=config.telemetry_interval_s,
            min_gap_s=config.telemetry_min_gap_s,
            queue_depth=lambda: len(self.queue),
            publish=self.link.publish_telemetry,
            pending=self.queue.pending_by_key,
        )
        self.announcer = announce_node(
            self.link.session,
            config.homeassistant,
            role="worker",
            node_id=config.worker_id,
            topics=config.topics,
            model=", ".join(self.runner.served()),
            sw_version=__version__,
        )
        self._compute_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, wait_s: float | None = 10.0) -> EdgeWorker:
        """Warm every served split on the compute thread, then connect and subscribe (with
        `wait_s`: wait for the SUBACK): devices see this worker only once it is warm."""
        if self._compute_thread is not None:
            raise WorkerStateError(f"worker {self.worker_id} is already started")
        if self._stopped.is_set():
            raise WorkerStateError(f"worker {self.worker_id} was stopped; build a new one")
        warmed = threading.Event()
        self._compute_thread = threading.Thread(
            target=self._compute_loop,
            args=(warmed,),
            name=f"compute-{self.worker_id}",
            daemon=True,
        )
        self._compute_thread.start()
        warmed.wait()
        try:
            self.link.start(wait_s=wait_s)  # raises BrokerConnectError
        except Exception:
            self.queue.close()
            self._compute_thread.join()
            self._compute_thread = None
            self.decoder.close()
            self._stopped.set()
            raise
        self.telemetry.start()
        LOG.info(
            "worker %s started: %s on %s (%s); serving once connected",
            self.worker_id,
            self.runner.served(),
            self.config.broker.url,
            self.runner.device,
        )
        return self

    def stop(self) -> None:
        """Leave the share groups, answer what is queued, publish "offline", clear the
        telemetry, disconnect. A request that still arrives is answered "rejected"."""
        if self._compute_thread is None:
            return
        self.link.unsubscribe()
        self.queue.close()
        self._compute_thread.join()
        self._compute_thread = None
        self.decoder.close()
        self.telemetry.stop()
        if self.announcer is not None:
            self.announcer.cancel()
        self.link.stop(clear_telemetry=True)
        self._stopped.set()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    def __enter__(self) -> EdgeWorker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- network thread -------------------------------------------------------------------------

    def _enqueue(self, request: InboundRequest) -> None:
        rejected = False
        try:
            self.queue.put(request)
        except RequestError as exc:  # QueueFullError, WorkerStoppingError
            rejected = True
            self.link.ack(request)
            self.stats.count("rejected", key=request.key)
            self._reply_failure(request, "rejected", ErrorInfo(code=exc.code, message=str(exc)))
        if not self._warned_over_capacity and len(self.queue) > self.queue.capacity:
            self._warned_over_capacity = True
            LOG.warning(
                "worker %s: the broker delivered more than ReceiveMaximum=%d unacknowledged "
                "requests (Mosquitto 2.0.11 was measured not to enforce it); holding them",
                self.worker_id,
                self.queue.capacity,
            )
        # Wake the telemetry thread only for news: a queue shallower than its depth step cannot
        # differ enough from the last telemetry (the batch's own nudge covers the rest), and a
        # wake-up per request took a core from the compute thread at the moment it starts.
        if rejected or len(self.queue) >= self.telemetry.depth_step:
            self.telemetry.nudge()

    def _unroutable(self, message: UnroutableMessage) -> None:
        self.stats.count("errors")
        if not message.quiet:
            LOG.warning("worker %s: on %s: %s", self.worker_id, message.topic, message.reason)

    def _connected(self) -> None:
        # Retained messages do not survive a broker restart (no persistence): send them again.
        for model, payload in self._catalogs.items():
            self.link.publish_catalog(model, payload)
        self.telemetry.nudge()

    def _status_payload(self, state: NodeState) -> bytes:
        message = StatusMessage(node_id=self.worker_id, role="worker", state=state, ts=time.time())
        return encode_message(message)

    # -- compute thread -------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """The runner's warm-up, here on the compute thread: its thread-local setup is paid too."""
        started = time.perf_counter()
        frames = warm_up_frames(self.runner.model_infos(), self.runner.served())
        self.decoder.warm_up(lambda: [self.runner.decode(f, m, k) for m, k, f in frames])
        for model, split, frame in frames:  # tensor frames decode on this thread
            self.runner.decode_in_line(frame, model, split)
        warmed = self.runner.warm_up()
        for model, split in warmed:
            for exact_path in (False, True):
                self.stats.mark_warm(model, split, 1, exact_path)
        if warmed:
            LOG.info(
                "worker %s: warmed %d splits in %.1f s",
                self.worker_id,
                len(warmed),
                time.perf_counter() - started,
            )

    def _compute_loop(self, warmed: threading.Event) -> None:
        try:
            self._warm_up()
        except Exception:  # a warm-up failure shows on the first request, with its reply
            LOG.exception("worker %s: warm-up failed", self.worker_id)
        finally:
            warmed.set()
        max_wait_s = self.max_wait_ms / 1000.0
        while True:
            batch = self.queue.take_batch(
                self.max_batch, max_wait_s, timeout_s=None, on_take=self.link.ack
            )
            if not batch:
                return
            self.stats.batch_started(len(batch))
            try:
                self._process(batch)
            except Exception:  # keep serving whatever one batch did
                LOG.exception("worker %s: batch failed", self.worker_id)
            finally:
                self.link.flush()  # the batch's PUBACKs and replies, written from here
                self.stats.batch_finished()
                self.telemetry.nudge()

    def _process(self, batch: Sequence[InboundRequest]) -> None:
        decoded = self._decode_batch(batch, _Taken(time.monotonic(), time.time()))
        if not decoded:
            return
        model, split = decoded[0].request.key
        exact_path = decoded[0].request.exact  # an exact request always runs alone
        started = time.perf_counter()
        try:
            if exact_path:
                top5 = [self.runner.run_exact(model, split, decoded[0].frame)]
            else:
                top5 = self.runner.run_batch(model, split, [d.frame for d in decoded])
        except Exception as exc:
            error = exc if isinstance(exc, RequestError) else ComputeError(f"tail failed: {exc!r}")
            if not isinstance(exc, RequestError):
                LOG.exception("worker %s: tail(%d) of %s failed", self.worker_id, split, model)
            for item in decoded:
                self._fail_safely(item.request, error, item.frame)
            return
        compute_ms = (time.perf_counter() - started) * 1000.0
        queue_ms = sum(item.queue_ms for item in decoded)
        self.stats.record_compute(
            model, split, len(decoded), compute_ms, queue_ms, exact_path=exact_path
        )
        exact = self.runner.computes_exactly(len(decoded), exact_path)
        backend = self.runner.backend_for(exact_path)
        for item, predictions in zip(decoded, top5, strict=True):
            try:
                self._reply_ok(item, predictions, compute_ms, len(decoded), exact, backend)
            except Exception as exc:  # one reply that cannot be built costs no batch-mate
                LOG.exception("worker %s: reply to one request failed", self.worker_id)
                self._fail_safely(item.request, ComputeError(f"reply failed: {exc!r}"), None)

    def _decode_batch(self, batch: Sequence[InboundRequest], taken: _Taken) -> list[_Decoded]:
        """The batch's requests decoded: tensor frames here (their decoding is linear and
        bounded by the frame limits; a hand-off to a decode thread and back cost more than
        it), image frames on the decode threads under the per-frame budget. Each one that
        expired, failed or overran is answered here and left out."""
        fresh = [request for request in batch if self._fresh(request, taken)]
        in_line = [self._decode_in_line(request) for request in fresh]
        deferred = [request for request, done in zip(fresh, in_line, strict=True) if done is None]
        pooled = iter(self.decoder.decode_all(deferred, self._decode_one) if deferred else ())
        outcomes = [done if done is not None else next(pooled) for done in in_line]
        admitted = (
            self._guarded_admit(request, outcome, taken)
            for request, outcome in zip(fresh, outcomes, strict=True)
        )
        return [d for d in admitted if d is not None]

    def _decode_in_line(self, request: InboundRequest) -> Outcome[Frame] | None:
        """A tensor frame's decode on this thread; None for an image frame (not decoded)."""
        started = time.perf_counter()
        try:
            frame = self.runner.decode_in_line(request.payload, request.model, request.split)
        except Exception as exc:  # handled as the decode pool's outcomes are, in _admit
            return Outcome(None, exc, 0.0)
        if frame is None:
            return None
        return Outcome(frame, None, (time.perf_counter() - started) * 1000.0)

    def _decode_one(self, request: InboundRequest) -> Frame:
        """On a decode thread: the runner's decoder is thread-safe (per-thread zstd contexts)."""
        return self.runner.decode(request.payload, request.model, request.split)

    def _fresh(self, request: InboundRequest, taken: _Taken) -> bool:
        """False (and answered "expired") when the message expiry passed in the queue."""
        if _expired(request.received, request.expiry_s, taken.monotonic):
            self._expire(request, None, "message expiry interval passed in the queue")
            return False
        return True

    def _guarded_admit(
        self, request: InboundRequest, outcome: Outcome[Frame], taken: _Taken
    ) -> _Decoded | None:
        """`_admit`, where anything unforeseen ends this request alone ("internal")."""
        try:
            return self._admit(request, outcome, taken)
        except Exception as exc:
            LOG.exception("worker %s: admitting one request failed", self.worker_id)
            self._fail_safely(request, ComputeError(f"decoding failed: {exc!r}"), None)
            return None

    def _fail_safely(self, request: InboundRequest, exc: Exception, frame: Frame | None) -> None:
        """`_fail` for the paths that already failed once: a second failure is logged, never
        raised into the batch loop (the request then gets no reply; FORMAT.md lists it)."""
        try:
            self._fail(request, exc, frame)
        except Exception:
            LOG.exception("worker %s: error reply to one request failed", self.worker_id)

    def _admit(
        self, request: InboundRequest, outcome: Outcome[Frame], taken: _Taken
    ) -> _Decoded | None:
        """The decoded request, or None once it is answered (error/expired)."""
        if outcome.error is not None:
            if not isinstance(outcome.error, (SchemaError, RequestError)):
                raise outcome.error
            self._fail_safely(request, outcome.error, None)
            return None
        frame = outcome.value
        assert frame is not None  # an outcome holds a value or an error
        if request.prepare_version not in (None, str(RECIPE_VERSION)):
            self._fail_safely(request, _prepare_mismatch(request.prepare_version), frame)
            return None
        stale = self._staleness(request, frame, taken)
        if stale is not None:
            self._expire(request, frame, stale)
            return None
        queue_ms = (taken.monotonic - request.received) * 1000.0
        return _Decoded(request, frame, queue_ms, outcome.decode_ms)

    def _staleness(self, request: InboundRequest, frame: Frame, taken: _Taken) -> str | None:
        """Why the request is past its deadline (FORMAT.md, Deadlines), or None. The time
        since receipt misses what a frozen worker or a resend on reconnect kept it waiting
        before; the device's `sent` timestamp does not, within the allowed clock skew."""
        deadline_ms = frame.header.deadline_ms
        if deadline_ms is None:
            return None
        if _expired(request.received, deadline_ms / 1000.0, taken.monotonic):
            return f"deadline of {deadline_ms:g} ms passed in the queue"
        sent = frame.header.timestamps.get(SENT_TIMESTAMP)
        skew_ms = self.config.max_clock_skew_ms
        if sent is None or skew_ms is None:
            return None
        age_ms = (taken.wall - sent) * 1000.0
        if age_ms <= deadline_ms + skew_ms:
            return None
        return (
            f"sent {age_ms / 1000.0:.3f} s ago by its timestamp, past its deadline of "
            f"{deadline_ms:g} ms (clocks are assumed to agree within {skew_ms:g} ms)"
        )

    # -- replies --------------------------------------------------------------------------------

    def _reply_ok(
        self,
        item: _Decoded,
        predictions: list[Prediction],
        compute_ms: float,
        batch_size: int,
        exact: bool,
        backend: Backend,
    ) -> None:
        request = item.request
        self.stats.count("served", key=request.key)
        if request.response_topic is None:
            return
        message = ResultMessage(
            request_id=item.frame.header.request_id,
            status="ok",
            model=request.model,
            split=request.split,
            worker_id=self.worker_id,
            top5=predictions,
            timings=ServerTimings(
                queue_ms=item.queue_ms,
                decode_ms=item.decode_ms,
                compute_ms=compute_ms,
                batch_size=batch_size,
            ),
            exact=exact,
            backend=backend,
        )
        self.link.reply(request.response_topic, request.correlation_data, encode_message(message))

    def _fail(self, request: InboundRequest, exc: Exception, frame: Frame | None) -> None:
        self.stats.count("errors")
        code = getattr(exc, "code", ComputeError.code)
        LOG.info("worker %s: request on %s/%d refused: %s", self.worker_id, *request.key, exc)
        message = str(exc)
        if len(message) > MAX_ERROR_MESSAGE_CHARS:  # never echo a megabyte of someone's header
            message = message[:MAX_ERROR_MESSAGE_CHARS] + "..."
        self._reply_failure(request, "error", ErrorInfo(code=code, message=message), frame)

    def _expire(self, request: InboundRequest, frame: Frame | None, why: str) -> None:
        self.stats.count("expired", key=request.key)
        self._reply_failure(request, "expired", ErrorInfo(code="expired", message=why), frame)

    def _reply_failure(
        self,
        request: InboundRequest,
        status: FailureStatus,
        error: ErrorInfo,
        frame: Frame | None = None,
    ) -> None:
        if request.response_topic is None:
            return
        message = ResultMessage(
            request_id=_request_id(request, frame),
            status=status,
            model=request.model,
            split=request.split,
            worker_id=self.worker_id,
            error=error,
        )
        self.link.reply(request.response_topic, request.correlation_data, encode_message(message))


def _expired(received: float, allowed_s: float | None, now: float) -> bool:
    return allowed_s is not None and now - received > allowed_s


def _request_id(request: InboundRequest, frame: Frame | None) -> str:
    """The frame's request id; for a frame that did not decode, the CorrelationData read as
    UTF-8 (FORMAT.md section 10). That is opaque to the worker: the device node's is a random
    token, not its request id, so the device matches the reply by CorrelationData alone."""
    if frame is not None:
        return frame.header.request_id
    if request.correlation_data:
        text = request.correlation_data[: MAX_ID_CHARS * 4].decode("utf-8", errors="replace")
        return text[:MAX_ID_CHARS]
    return UNKNOWN_REQUEST_ID


def _prepare_mismatch(version: str) -> PrepareMismatchError:
    return PrepareMismatchError(
        f"image prepared under recipe {version!r}, this worker's is {RECIPE_VERSION}"
        " (FORMAT.md 11.2): read the catalog again"
    )
