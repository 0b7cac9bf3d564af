"""A frozen worker (SIGSTOP) loses its share of the work within a bounded time: its keepalive
lets the broker drop it, its last will says "offline", and the `$share` group routes every new
request to the worker that still runs. The device ends each request with exactly one record,
falling back locally for the requests the frozen worker held."""

from __future__ import annotations

import signal
import time
from collections import Counter
from contextlib import ExitStack

import pytest

from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.records import Fallback, ResultRecord
from device_node.runtime import build_device
from device_node.sources import CyclingSource, sample_source_images
from device_node.workers import WorkerView
from edge_worker.config import WorkerConfig, worker_config_from_mapping
from mqtt_session.client import BrokerSettings
from splitmq.worker_process import worker_popen
from splitting.registry import load_model
from splitting.torch_blocks import TorchBlocks
from tests.support.waiting import wait_until

MODEL = "efficientnet-lite0"
SPLIT = 13  # a late split: the tail is cheap for the two worker processes on shared cores
RATE_HZ = 4.0


def test_the_broker_drops_a_frozen_worker_before_devices_call_its_telemetry_stale() -> None:
    # A device takes a worker for gone after 3 telemetry intervals + 1 s without telemetry
    # (device_node.workers); the broker drops a silent client after 1.5 keepalives.
    config = worker_config_from_mapping({"broker": {"host": "edge", "port": 1884}})
    assert 1.5 * config.broker.keepalive <= 3 * config.telemetry_interval_s + 1.0
    given = worker_config_from_mapping({"broker": {"keepalive": 60}})
    assert given.broker.keepalive == 60


def lite0_worker(settings: BrokerSettings, worker_id: str) -> WorkerConfig:
    # Only host and port: the keepalive is the worker's default, which is under test.
    return worker_config_from_mapping(
        {
            "broker": {"host": settings.host, "port": settings.port},
            "worker_id": worker_id,
            "models": [{"name": MODEL, "splits": [SPLIT]}],
            "device": "cpu",
            "max_batch": 1,
            "torch_threads": 1,
        }
    )


def offline(view: WorkerView | None) -> bool:
    return view is not None and view.online is False


@pytest.mark.integration
def test_a_frozen_worker_stops_getting_requests_and_every_request_ends_once(
    broker_settings: BrokerSettings,
) -> None:
    config = DeviceConfig(
        broker=broker_settings,
        device_id="steady-device",
        model=MODEL,
        codec="int8",
        policy=FixedPolicyConfig(split=SPLIT),
        deadline_ms=2000.0,
        torch_threads=1,
    )
    node = build_device(config, model=TorchBlocks(load_model(MODEL)))
    source = CyclingSource(sample_source_images())
    records: list[ResultRecord] = []
    with ExitStack() as stack:
        frozen = stack.enter_context(
            worker_popen(lite0_worker(broker_settings, "w-frozen"), quiet=True)
        )
        stack.enter_context(worker_popen(lite0_worker(broker_settings, "w-alive"), quiet=True))
        stack.enter_context(node)
        both = lambda: len(node.link.alive_workers(MODEL, SPLIT)) == 2  # noqa: E731
        wait_until(both, 90, "both worker processes")
        records += node.run(source, requests=8, rate_hz=RATE_HZ)

        frozen.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        keepalive = lite0_worker(broker_settings, "w").broker.keepalive
        during: list[ResultRecord] = []
        # 1.5 keepalives; Mosquitto 2.0.11 checks keepalives about every 5 s; the loop sees the
        # drop after the request in flight (up to its 2 s deadline); 1 s of slack.
        drop_bound_s = 1.5 * keepalive + 5.0 + 2.0 + 1.0
        while not offline(node.link.workers().get("w-frozen")):
            assert time.monotonic() - frozen_at < drop_bound_s, "the frozen worker kept its share"
            during.append(node.run_request(source.read()))
        dropped_after_s = time.monotonic() - frozen_at
        assert dropped_after_s < drop_bound_s, "the frozen worker kept its share"
        after = node.run(source, requests=12, rate_hz=RATE_HZ)
        frozen.send_signal(signal.SIGCONT)
    records += during + after
    assert len({r.request_id for r in records}) == len(records), "a request with two records"
    assert all(r.offloaded and r.worker_id == "w-alive" for r in after)
    held = [r for r in during if not r.offloaded]
    assert {r.fallback for r in held} <= {Fallback.TIMEOUT, Fallback.WORKER_LOST}
    assert {r.worker_id for r in during if r.offloaded} <= {"w-alive"}
    local = Counter(r.fallback for r in records if not r.offloaded)
    print(
        f"worker SIGSTOP, two workers: dropped by the broker {dropped_after_s:.1f} s after the "
        f"freeze (keepalive {keepalive} s); {len(records)} requests, {len(records)} records, "
        f"{sum(r.offloaded for r in records)} offloaded, local {dict(local)}, "
        f"{len(after)}/{len(after)} after the drop served by the other, lost 0, duplicates 0"
    )
