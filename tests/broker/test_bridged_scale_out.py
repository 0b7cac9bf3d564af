"""Scale-out across bridged brokers, with real Mosquitto processes: two edge brokers bridged
(broker/mosquitto-site.conf) to one core broker where two workers share a `$share` group.

Every request from a device at either edge gets exactly one result: none lost, none twice. And
the reason the README puts workers on one side only: a `$share` group is per broker, so a worker
at an edge as well as one at the core computes every request of that edge twice.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from broker.launcher import PACKAGE_DIR, MosquittoBroker
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.bench.light_device import LightDevice
from tests.support.worker_clients import echo_frame, until_bridged, worker_config

pytestmark = pytest.mark.integration

SITE_CONFIG = PACKAGE_DIR / "mosquitto-site.conf"
PER_DEVICE = 60  # 2 edges x 2 devices x 60 = 240 requests
WAIT_S = 60.0


def _settings(broker: MosquittoBroker) -> BrokerSettings:
    return BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)


@contextlib.contextmanager
def _edge(core: MosquittoBroker, name: str) -> Iterator[MosquittoBroker]:
    substitutions = {
        "central_host": core.host,
        "central_port": str(core.port),
        "prefix": "splitmq",
        "site": name,
    }
    with MosquittoBroker(config_template=SITE_CONFIG, substitutions=substitutions) as running:
        yield running


def _echo_worker(settings: BrokerSettings, worker_id: str) -> EdgeWorker:
    config = worker_config(settings, worker_id=worker_id, models=[{"name": "echo"}], runner="echo")
    return EdgeWorker(config)


def _send_burst(devices: list[LightDevice]) -> dict[str, list[str]]:
    sent: dict[str, list[str]] = {}
    for i in range(PER_DEVICE):
        for device in devices:
            rid = f"{device.device_id}-r{i}"
            topic = device.topics.request("echo", 1, device.device_id)
            device.send(topic, echo_frame(rid), rid)
            sent.setdefault(device.device_id, []).append(rid)
    return sent


def test_two_edges_one_core_two_workers_give_one_result_per_request(
    broker: MosquittoBroker,
) -> None:
    core = _settings(broker)
    with (
        _echo_worker(core, "core-w1"),
        _echo_worker(core, "core-w2"),
        _edge(broker, "edge-a") as edge_a,
        _edge(broker, "edge-b") as edge_b,
    ):
        devices = [
            LightDevice(_settings(edge), f"{edge_name}-cam{n}").start()
            for edge, edge_name in ((edge_a, "a"), (edge_b, "b"))
            for n in (1, 2)
        ]
        try:
            for device in devices:
                until_bridged(device, f"{device.device_id}-probe")
            before = {d.device_id: d.duplicates for d in devices}
            sent = _send_burst(devices)
            for device in devices:
                device.wait(sent[device.device_id], timeout_s=WAIT_S)
        finally:
            for device in devices:
                device.stop()
    total = sum(len(ids) for ids in sent.values())
    assert total >= 200
    lost = [rid for d in devices for rid in sent[d.device_id] if rid not in d.replies]
    assert lost == [], f"{len(lost)} of {total} requests got no result"
    duplicates = sum(d.duplicates - before[d.device_id] for d in devices)
    assert duplicates == 0
    workers = Counter(
        reply.message.worker_id if reply.message else None
        for d in devices
        for rid in sent[d.device_id]
        for reply in [d.replies[rid]]
    )
    assert set(workers) == {"core-w1", "core-w2"}, workers  # the core's group shared the load
    assert sum(workers.values()) == total


def test_workers_on_both_sides_of_a_bridge_compute_each_request_twice(
    broker: MosquittoBroker,
) -> None:
    """What the README warns about, shown: the edge's group and the core's group each take the
    request, and the device hears two answers."""
    with (
        _echo_worker(_settings(broker), "core-w"),
        _edge(broker, "edge-a") as edge,
        _echo_worker(_settings(edge), "edge-w"),
    ):
        device = LightDevice(_settings(edge), "a-cam").start()
        try:
            until_bridged(device, "a-cam-probe")
            topic = device.topics.request("echo", 1, device.device_id)
            ids = [f"twice-{i}" for i in range(20)]
            before = device.duplicates
            for rid in ids:
                device.send(topic, echo_frame(rid), rid)
            assert device.wait(ids, timeout_s=WAIT_S)
            # Each request's second answer arrives shortly after its first.
            twice = _wait_duplicates(device, before + len(ids))
        finally:
            device.stop()
    assert twice, f"{device.duplicates - before} second answers, wanted {len(ids)}"


def _wait_duplicates(device: LightDevice, count: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if device.duplicates >= count:
            return True
        time.sleep(0.05)
    return device.duplicates >= count
