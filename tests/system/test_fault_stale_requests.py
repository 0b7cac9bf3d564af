"""Requests whose deadline passed before a worker could take them are answered "expired", never
computed: a worker frozen (SIGSTOP) past the deadline, and a request a device's paho resends
on reconnect long after it was sent. A real echo worker process and a real Mosquitto."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest

from device_node.link import DeviceLink
from edge_worker.config import WorkerConfig
from edge_worker.runner import echo_model_info
from mqtt_session.client import BrokerSettings
from schemas.frame import SENT_TIMESTAMP, encode_frame
from schemas.messages import TelemetryMessage
from splitmq.worker_process import echo_worker_config, worker_popen
from tests.support.waiting import wait_until
from tests.support.worker_clients import Requester

pytestmark = pytest.mark.integration

ECHO = echo_model_info()
SPLIT = 1
DEADLINE_MS = 500.0
SKEW_MS = 1000.0  # the worker's default max_clock_skew_ms


def frame(request_id: str, *, sent: float | None, deadline_ms: float = DEADLINE_MS) -> bytes:
    return encode_frame(
        np.zeros(ECHO.split_shapes[SPLIT], dtype=np.float32),
        codec="lossless",
        request_id=request_id,
        model=ECHO.name,
        fingerprint=ECHO.fingerprint,
        split=SPLIT,
        device_id="test-device",
        timestamps={} if sent is None else {SENT_TIMESTAMP: sent},
        deadline_ms=deadline_ms,
    )


def telemetry(observer: DeviceLink, worker_id: str) -> TelemetryMessage | None:
    view = observer.workers().get(worker_id)
    return None if view is None else view.telemetry


@pytest.fixture
def observer(broker_settings: BrokerSettings) -> Iterator[DeviceLink]:
    link = DeviceLink(broker_settings, "observer").start(wait_s=10)
    yield link
    link.stop()


def serving_worker(settings: BrokerSettings, worker_id: str) -> WorkerConfig:
    config = echo_worker_config(settings, worker_id=worker_id, max_batch=8, queue_capacity=64)
    # A long keepalive: the broker keeps the frozen worker's connection, so what it was sent
    # reaches it after the freeze (the short default would have the broker drop it).
    broker = config.broker.model_copy(update={"keepalive": 60})
    return config.model_copy(update={"broker": broker})


def test_requests_that_expired_while_the_worker_was_frozen_are_not_computed(
    broker_settings: BrokerSettings, requester: Requester, observer: DeviceLink
) -> None:
    with worker_popen(serving_worker(broker_settings, "frozen"), quiet=True) as process:
        wait_until(lambda: observer.alive_workers(ECHO.name, SPLIT), 60, "the worker process")
        requester.send(ECHO.name, SPLIT, frame("before", sent=time.time()), "before")
        assert requester.wait(["before"])[0].status == "ok"

        process.send_signal(signal.SIGSTOP)
        stale = [f"stale-{i}" for i in range(10)]
        for rid in stale:
            # A MessageExpiryInterval far off: only the frame's own deadline says it is stale.
            requester.send(ECHO.name, SPLIT, frame(rid, sent=time.time()), rid, expiry_s=60)
        time.sleep((DEADLINE_MS + SKEW_MS) / 1000.0 + 1.0)  # frozen past deadline + skew
        process.send_signal(signal.SIGCONT)

        results = requester.wait(stale)
        requester.send(ECHO.name, SPLIT, frame("after", sent=time.time()), "after")
        after = requester.wait(["after"])[0]

        def counted() -> TelemetryMessage | None:
            seen = telemetry(observer, "frozen")
            return seen if seen is not None and seen.served + seen.expired >= 12 else None

        wait_until(counted, 20, "telemetry counting every request")
        seen = counted()
    assert [r.status for r in results] == ["expired"] * len(stale)
    assert all(r.error is not None and "by its timestamp" in r.error.message for r in results)
    assert after.status == "ok"
    assert seen is not None and (seen.served, seen.expired) == (2, len(stale))
    print(
        f"worker SIGSTOP past the deadline: {len(stale) + 2} requests, 2 computed, "
        f"{len(stale)} answered expired, 0 stale computed"
    )


def test_a_request_resent_long_after_it_was_sent_is_not_computed(
    broker_settings: BrokerSettings, requester: Requester, observer: DeviceLink
) -> None:
    # What paho resends on reconnect is the original frame: its `sent` is as old as the
    # outage, while the broker hands it over fresh, with a full MessageExpiryInterval.
    with worker_popen(serving_worker(broker_settings, "steady"), quiet=True):
        wait_until(lambda: observer.alive_workers(ECHO.name, SPLIT), 60, "the worker process")
        now = time.time()
        requester.send(ECHO.name, SPLIT, frame("resent", sent=now - 17.0), "resent")
        # A device whose clock runs ahead is never expired early; nor is a frame without `sent`.
        requester.send(ECHO.name, SPLIT, frame("ahead", sent=now + 3600.0), "ahead")
        requester.send(ECHO.name, SPLIT, frame("undated", sent=None), "undated")
        # Within the deadline plus the skew allowance: computed.
        late_ok = now - (DEADLINE_MS + SKEW_MS / 2) / 1000.0
        requester.send(ECHO.name, SPLIT, frame("skewed", sent=late_ok), "skewed")
        resent, ahead, undated, skewed = requester.wait(["resent", "ahead", "undated", "skewed"])
    assert resent.status == "expired"
    assert (ahead.status, undated.status, skewed.status) == ("ok", "ok", "ok")
