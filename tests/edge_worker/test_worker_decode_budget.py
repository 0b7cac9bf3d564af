"""Image frames decode off the compute thread under a per-frame budget: a frame that takes too
long to decode is answered decode_timeout and its batch-mates are served without waiting for it.
Tensor frames, whose decoding is linear and bounded by the frame limits, decode on the compute
thread."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from edge_worker.decoding import DecodePool
from edge_worker.errors import DecodeTimeoutError
from edge_worker.runner import EchoTailRunner, echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import Frame, FrameLimits, encode_frame, peek_header
from tests.support.frames import build_frame, split_frame
from tests.support.image_bombs import APP1, COM, photo, segment_bomb
from tests.support.scaled_model import worker_config
from tests.support.worker_clients import Requester, echo_frame

SLOW_DECODE_S = 3.0


def _burn(seconds: float) -> float:
    """Busy for `seconds` of this thread's CPU time, mostly without the GIL (hashing a block
    releases it), as a slow image decode in C is."""
    block = bytes(1 << 20)
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        hashlib.sha256(block).digest()
    return seconds


class SlowDecodeRunner(EchoTailRunner):
    """Echo runner whose decoding of a frame with request id "slow" burns SLOW_DECODE_S of CPU;
    it records the threads each decoding path ran on."""

    def __init__(self) -> None:
        super().__init__([echo_model_info()])
        self.decode_threads: set[str] = set()
        self.in_line_threads: set[str] = set()

    def decode(self, payload: bytes, model: str, split: int) -> Frame:
        self.decode_threads.add(threading.current_thread().name)
        if peek_header(payload).request_id == "slow":
            _burn(SLOW_DECODE_S)
        return super().decode(payload, model, split)

    def decode_in_line(self, payload: bytes, model: str, split: int) -> Frame | None:
        self.in_line_threads.add(threading.current_thread().name)
        return super().decode_in_line(payload, model, split)


def webp_frame(request_id: str) -> bytes:
    """A split-0 request of the echo model as a WebP image (decoded under the budget)."""
    info = echo_model_info()
    return encode_frame(
        photo(info.split_shapes[0][0]), codec="webp", request_id=request_id, model=info.name,
        fingerprint=info.fingerprint, split=0,
    )  # fmt: skip


def test_the_pool_answers_a_decode_over_its_cpu_budget_and_keeps_the_others() -> None:
    pool = DecodePool(2, 0.2, max_wait_s=10.0)
    try:
        started = time.perf_counter()
        outcomes = pool.decode_all([0.0, 2.0, 0.01], _burn)
        waited = time.perf_counter() - started
    finally:
        pool.close()
    assert waited < 1.5
    assert [o.value for o in outcomes] == [0.0, None, 0.01]
    assert isinstance(outcomes[1].error, DecodeTimeoutError)
    assert outcomes[1].error.code == "decode_timeout"
    assert pool.overran == 1


def test_a_decode_that_waits_without_using_cpu_is_not_charged() -> None:
    # A frame held up by a busy machine (here: sleeping) is waited for up to max_wait_s.
    pool = DecodePool(1, 0.05, max_wait_s=10.0)
    try:
        (outcome,) = pool.decode_all([0.3], _slept)
    finally:
        pool.close()
    assert outcome.value == 0.3 and outcome.error is None and pool.overran == 0


def test_the_wall_time_cap_ends_a_wait_however_little_cpu_it_used() -> None:
    pool = DecodePool(1, 10.0, max_wait_s=0.2)
    try:
        started = time.perf_counter()
        (outcome,) = pool.decode_all([2.0], _slept)
        waited = time.perf_counter() - started
    finally:
        pool.close()
    assert isinstance(outcome.error, DecodeTimeoutError) and waited < 1.0


def _slept(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_the_pool_hands_back_a_decoders_exception() -> None:
    pool = DecodePool(1, 1.0, max_wait_s=10.0)
    try:
        (outcome,) = pool.decode_all(["x"], int)
    finally:
        pool.close()
    assert isinstance(outcome.error, ValueError) and outcome.value is None


@pytest.mark.integration
def test_a_slow_decode_is_answered_decode_timeout_and_its_batch_mates_go_on(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    runner = SlowDecodeRunner()
    config = worker_config(
        broker_settings,
        models=[{"name": "echo"}],
        max_batch=8,
        max_wait_ms=50.0,
        decode_budget_ms=200.0,
    )
    with EdgeWorker(config, runner) as worker:
        sent = time.perf_counter()
        requester.send("echo", 0, webp_frame("slow"), "slow")
        good = [f"good-{i}" for i in range(3)]
        for rid in good:
            requester.send("echo", 0, webp_frame(rid), rid)
        results = requester.wait(good, timeout_s=SLOW_DECODE_S)
        good_s = time.perf_counter() - sent
        (slow,) = requester.wait(["slow"], timeout_s=SLOW_DECODE_S)
        assert all(result.status == "ok" for result in results)
        assert good_s < SLOW_DECODE_S / 2, "the good requests waited for the slow decode"
        assert slow.status == "error" and slow.error is not None
        assert slow.error.code == "decode_timeout"
        assert worker.decoder.overran == 1
        assert runner.decode_threads and not any(
            name.startswith("compute-") for name in runner.decode_threads
        ), "image frames were decoded on the compute thread"
        requester.send("echo", 0, webp_frame("after"), "after")
        assert requester.wait(["after"], timeout_s=10)[0].status == "ok"


@pytest.mark.integration
def test_tensor_frames_decode_on_the_compute_thread_and_images_on_the_decode_threads(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    runner = SlowDecodeRunner()
    config = worker_config(broker_settings, models=[{"name": "echo"}], max_batch=8)
    with EdgeWorker(config, runner):
        runner.decode_threads.clear()  # the warm-up decodes on every decode thread
        requester.send("echo", 1, echo_frame("tensor"), "tensor")
        assert requester.wait(["tensor"], timeout_s=10)[0].status == "ok"
        assert runner.decode_threads == set(), "a tensor frame went to a decode thread"
        assert {name.split("-")[0] for name in runner.in_line_threads} == {"compute"}
        requester.send("echo", 0, webp_frame("image"), "image")
        assert requester.wait(["image"], timeout_s=10)[0].status == "ok"
        assert runner.decode_threads and not any(
            name.startswith("compute-") for name in runner.decode_threads
        )


@pytest.mark.integration
@pytest.mark.parametrize("segment", [COM, APP1], ids=["com", "app1"])
def test_a_segment_bomb_at_the_frame_limit_is_refused_and_the_request_behind_it_served(
    broker_settings: BrokerSettings, requester: Requester, segment: bytes
) -> None:
    info = echo_model_info()
    jpeg = encode_frame(
        photo(16), codec="jpeg", request_id="bomb", model=info.name,
        fingerprint=info.fingerprint, split=0,
    )  # fmt: skip
    header, params, body = split_frame(jpeg)
    # The largest the broker lets through (a larger one it refuses itself, PUBACK 0x95).
    bomb = segment_bomb(body, segment, total=FrameLimits().max_frame_bytes - 4096)
    header["raw_bytes"] = len(bomb)
    config = worker_config(broker_settings, models=[{"name": "echo"}], max_batch=8)
    with EdgeWorker(config, EchoTailRunner([info])) as worker:
        requester.send("echo", 0, build_frame(json.dumps(header), params, bomb), "bomb")
        requester.send("echo", 0, echo_frame("behind", split=0), "behind")
        refused, served = requester.wait(["bomb", "behind"], timeout_s=30)
        assert refused.status == "error" and refused.error is not None
        assert refused.error.code == "limit_exceeded"
        assert "marker segments" in refused.error.message
        assert served.status == "ok"
        assert worker.decoder.overran == 0
