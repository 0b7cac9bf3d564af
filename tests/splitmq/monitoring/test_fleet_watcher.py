"""What the monitor and exporter believe: only what the topics vouch for, bounded."""

from __future__ import annotations

import time

from mqtt_session.client import BrokerSettings
from mqtt_session.session import MqttSession
from schemas.messages import StatusMessage, TelemetryMessage, encode_message
from schemas.topics import Topics
from splitmq.monitoring.fleet import FleetSnapshot, FleetWatcher

TOPICS = Topics()


def telemetry(worker_id: str, served: int = 1) -> bytes:
    message = TelemetryMessage(
        worker_id=worker_id, ts=time.time(), seq=1, interval_s=1.0, device="cpu",
        models={"m": [1]}, queue_depth=0, queue_capacity=8, in_flight=0, batch_size=1.0,
        max_batch=1, utilization=0.0, service_ms={}, served=served, rejected=0, expired=0,
        errors=0,
    )  # fmt: skip
    return encode_message(message)


def publish_all(settings: BrokerSettings, messages: list[tuple[str, bytes]]) -> None:
    session = MqttSession(settings, client_id="publisher").start(wait_s=10)
    try:
        for topic, payload in messages:
            session.publish(topic, payload, retain=True).wait_for_publish(5)
    finally:
        session.stop(timeout_s=1)


def test_payloads_speaking_for_another_node_are_dropped(broker_settings: BrokerSettings) -> None:
    spoofed_status = StatusMessage(node_id="w1", role="worker", state="offline", ts=time.time())
    publish_all(
        broker_settings,
        [
            (TOPICS.telemetry("w1"), telemetry("w1", served=5)),
            (TOPICS.telemetry("w2"), telemetry("w1", served=99)),  # says it is w1
            (TOPICS.status("w2"), encode_message(spoofed_status)),  # says w1 is offline
            (TOPICS.telemetry("w3"), b'{"v": 1, "queue_depth": 1e400}'),
            (TOPICS.device_state("d1"), b"\xff\xfe not json"),
        ],
    )
    with FleetWatcher(broker_settings) as watcher:
        snapshot = watcher.snapshot()
    assert set(snapshot.workers) == {"w1"}
    view = snapshot.workers["w1"]
    assert view.telemetry is not None and view.telemetry.served == 5
    assert view.online is None  # no status of its own was published
    assert snapshot.devices == {}
    assert watcher.dropped == 4


def test_the_number_of_nodes_kept_is_bounded(broker_settings: BrokerSettings) -> None:
    publish_all(
        broker_settings, [(TOPICS.telemetry(f"w{i}"), telemetry(f"w{i}")) for i in range(7)]
    )
    watcher = FleetWatcher(broker_settings, max_nodes=5)
    with watcher:

        def all_seen(snapshot: FleetSnapshot) -> bool:
            return len(snapshot.workers) + watcher.dropped >= 7

        assert watcher.wait_for(all_seen, 10)
        assert len(watcher.snapshot().workers) == 5 and watcher.dropped == 2


def test_broker_figures_come_from_sys_topics(broker_settings: BrokerSettings) -> None:
    with FleetWatcher(broker_settings) as watcher:
        # $SYS comes every 5 s (broker/mosquitto.conf); the retained figures may predate the
        # watcher, so wait for a round that counts it.
        def counted(snapshot: FleetSnapshot) -> bool:
            gauges, counters = snapshot.broker.gauges, snapshot.broker.counters
            return (
                gauges.get("clients_connected", 0) >= 1
                and counters.get("messages_received", 0) >= 1
                and counters.get("bytes_received", 0) >= 1
            )

        assert watcher.wait_for(counted, 15), watcher.snapshot().broker
