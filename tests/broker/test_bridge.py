"""A site Mosquitto bridged to a central one with Mosquitto's own bridge
(broker/mosquitto-site.conf): a device on the site broker reaches a worker on the central one,
and its results, the worker's retained telemetry and the exact flag cross the bridge. Two real
Mosquitto processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.launcher import PACKAGE_DIR, MosquittoBroker
from device_node.link import DeviceLink
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.bench.light_device import LightDevice
from tests.support.worker_clients import echo_frame, worker_config

pytestmark = pytest.mark.integration

SITE_CONFIG = PACKAGE_DIR / "mosquitto-site.conf"


@pytest.fixture
def site(broker: MosquittoBroker) -> Iterator[MosquittoBroker]:
    """A site broker bridged to the `broker` fixture (the central one)."""
    substitutions = {
        "central_host": broker.host,
        "central_port": str(broker.port),
        "prefix": "splitmq",
        "site": "site-a",
    }
    with MosquittoBroker(config_template=SITE_CONFIG, substitutions=substitutions) as running:
        yield running


def test_requests_from_a_site_reach_a_central_worker_and_results_come_back(
    broker_settings: BrokerSettings, site: MosquittoBroker
) -> None:
    site_settings = BrokerSettings(host=site.host, port=site.port, reconnect_max_delay_s=2)
    config = worker_config(
        broker_settings, worker_id="central-worker", models=[{"name": "echo"}], runner="echo"
    )
    with EdgeWorker(config):
        # The worker's retained telemetry crosses the bridge: a site device sees it alive.
        observer = DeviceLink(site_settings, "site-observer").start(wait_s=10)
        try:
            assert observer.wait_for_worker("echo", 1, 20), "telemetry never crossed the bridge"
        finally:
            observer.stop()
        device = LightDevice(site_settings, "site-device").start()
        try:
            topic = device.topics.request("echo", 1, device.device_id)
            ids = [f"bridged-{i}" for i in range(20)]
            for i, rid in enumerate(ids):
                device.send(topic, echo_frame(rid), rid, exact=i % 2 == 0)
            assert device.wait(ids, timeout_s=20)
        finally:
            device.stop()
    results = [device.replies[rid].message for rid in ids]
    assert all(r is not None and r.status == "ok" for r in results)
    assert {r.worker_id for r in results if r} == {"central-worker"}
    assert device.duplicates == 0
    # The exact flag (a user property) crossed too: those requests ran alone.
    exact = [r for i, r in enumerate(results) if i % 2 == 0 and r]
    assert all(r.exact and r.timings and r.timings.batch_size == 1 for r in exact)
