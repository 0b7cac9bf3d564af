"""The fleet as Home Assistant, Prometheus and an operator see it, on one real run.

A real Mosquitto, a real edge worker serving efficientnet-lite0, and a real `device-node` process
classifying sample images. The test reads what the integrations publish and serve: the
discovery configs and their re-announcement after Home Assistant's birth message, availability
when the device process is killed, the exporter's metrics scraped over HTTP against the
telemetry, and `splitmq monitor --once --json`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from broker.launcher import MosquittoBroker, free_port
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from mqtt_session.session import MqttSession
from schemas.discovery import HomeAssistantSettings
from schemas.messages import parse_status, parse_telemetry
from schemas.topics import Topics
from splitmq.monitoring.exporter import FleetCollector
from splitmq.monitoring.fleet import FleetSnapshot, FleetWatcher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0"
SPLIT = 5
WORKER = "edge-int"
DEVICE = "cam-int"
TOPICS = Topics()
HA = HomeAssistantSettings(birth_delay_max_s=0.3)


@dataclass
class DiscoveryLog:
    """Every discovery config seen, per node id, in arrival order."""

    payloads: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    changed: threading.Condition = field(default_factory=threading.Condition)

    def on_message(self, message: mqtt.MQTTMessage) -> None:
        node = message.topic.split("/")[-2]
        with self.changed:
            self.payloads[node].append(bytes(message.payload))
            self.changed.notify_all()

    def wait(self, node: str, count: int, timeout_s: float = 30) -> list[bytes]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.payloads[node]) >= count, timeout_s), (
                f"{node}: {len(self.payloads[node])} discovery messages, wanted {count}"
            )
            return list(self.payloads[node])


@dataclass
class Fleet:
    settings: BrokerSettings
    watcher: FleetWatcher
    discovery: DiscoveryLog
    observer: MqttSession
    device: subprocess.Popen[bytes]
    metrics_url: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)
        discovery = DiscoveryLog()
        observer = MqttSession(settings, client_id="ha-observer")
        observer.route(f"{HA.discovery_prefix}/device/+/config", discovery.on_message)
        observer.start(wait_s=10)
        worker_config = WorkerConfig(
            broker=settings,
            worker_id=WORKER,
            models=[ModelEntry(name=MODEL, splits=[0, SPLIT])],
            device="cpu",
            max_batch=1,
            homeassistant=HA,
        )
        with EdgeWorker(worker_config) as _, FleetWatcher(settings) as watcher:
            registry = CollectorRegistry()
            registry.register(FleetCollector(watcher))
            port = free_port()
            server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
            device = _start_device(settings, tmp_path_factory.mktemp("device"))
            try:
                yield Fleet(settings, watcher, discovery, observer, device,
                            f"http://127.0.0.1:{port}/metrics")  # fmt: skip
            finally:
                device.kill()
                device.wait(10)
                server.shutdown()
                thread.join(5)
                observer.stop()


def _start_device(settings: BrokerSettings, folder: Path) -> subprocess.Popen[bytes]:
    config = {
        "broker": {"host": settings.host, "port": settings.port, "reconnect_max_delay_s": 2},
        "device_id": DEVICE,
        "model": MODEL,
        "codec": "int8",
        "policy": {"kind": "fixed", "split": SPLIT},
        "rate_hz": 8.0,
        "state_interval_s": 0.5,
        "homeassistant": {"birth_delay_max_s": HA.birth_delay_max_s},
    }
    path = folder / "device.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "device_node.cli", "--config", str(path), "-q"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)


def _device_served(fleet: Fleet, at_least: int) -> FleetSnapshot:
    def enough(snapshot: FleetSnapshot) -> bool:
        view = snapshot.devices.get(DEVICE)
        return view is not None and view.state is not None and view.state.offloaded >= at_least

    assert fleet.watcher.wait_for(enough, 120), "the device never offloaded enough requests"
    return fleet.watcher.snapshot()


# -- Home Assistant -----------------------------------------------------------------------------

DEVICE_CLASS_UNITS = {"duration": {"ms", "s"}, "data_size": {"B", "kB"}, "data_rate": {"bit/s"}}
COMPONENT_KEYS = {"p", "name", "unique_id", "state_topic", "value_template", "device_class",
                  "state_class", "unit_of_measurement", "entity_category", "icon"}  # fmt: skip


def test_each_node_announces_a_device_based_discovery_config(fleet: Fleet) -> None:
    _device_served(fleet, 1)
    for node, role in ((WORKER, "worker"), (DEVICE, "device")):
        config = json.loads(fleet.discovery.wait(node, 1)[-1])
        assert set(config) == {"dev", "o", "cmps", "availability", "qos"}
        assert set(config["dev"]) == {"ids", "name", "mf", "mdl", "sw"}
        assert set(config["o"]) == {"name", "sw", "url"}
        assert config["availability"] == [
            {
                "topic": TOPICS.status(node),
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
        state_topic = TOPICS.device_state(node) if role == "device" else TOPICS.telemetry(node)
        ids = set()
        for component in config["cmps"].values():
            assert set(component) <= COMPONENT_KEYS and component["p"] == "sensor"
            assert component["state_topic"] == state_topic
            units = DEVICE_CLASS_UNITS.get(component.get("device_class", ""))
            if units is not None:
                assert component["unit_of_measurement"] in units
            assert component.get("state_class") in (None, "measurement", "total_increasing")
            assert component.get("entity_category") in (None, "diagnostic")
            ids.add(component["unique_id"])
        assert len(ids) == len(config["cmps"]), "unique ids repeat"


def test_value_templates_render_the_published_state(fleet: Fleet) -> None:
    """Each component's template, rendered as Home Assistant would (Jinja, `value_json`),
    gives a value from the node's real state or telemetry message."""
    snapshot = _device_served(fleet, 3)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    device = snapshot.devices[DEVICE].state
    worker = snapshot.workers[WORKER].telemetry
    assert device is not None and device.last is not None and worker is not None
    sources: dict[str, BaseModel] = {DEVICE: device, WORKER: worker}
    rendered: dict[str, dict[str, str]] = {}
    for node, message in sources.items():
        config = json.loads(fleet.discovery.wait(node, 1)[-1])
        value_json = json.loads(message.model_dump_json())
        rendered[node] = {
            key: env.from_string(c["value_template"]).render(value_json=value_json)
            for key, c in config["cmps"].items()
        }
    assert rendered[DEVICE]["prediction"] == device.last.label
    assert rendered[DEVICE]["split"] == str(SPLIT)
    assert float(rendered[DEVICE]["offload_ratio"]) == pytest.approx(
        device.offload_ratio * 100, abs=0.1
    )
    assert int(rendered[WORKER]["served"]) == worker.served
    assert all(value not in ("", "None") for value in rendered[WORKER].values())


def test_discovery_is_sent_again_after_home_assistant_comes_online(fleet: Fleet) -> None:
    before = {node: len(fleet.discovery.wait(node, 1)) for node in (WORKER, DEVICE)}
    fleet.observer.publish(HA.status_topic, b"online").wait_for_publish(5)
    for node, count in before.items():
        again = fleet.discovery.wait(node, count + 1, timeout_s=10)
        assert again[-1] == again[0], "the re-announced config is the same config"


# -- Prometheus ---------------------------------------------------------------------------------


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_exporter_metrics_agree_with_the_telemetry(fleet: Fleet) -> None:
    _device_served(fleet, 3)
    # $SYS comes every 5 s: wait for a round that counts the clients of this run.
    assert fleet.watcher.wait_for(lambda s: s.broker.gauges.get("clients_connected", 0) >= 3, 15), (
        "no $SYS round counted the clients"
    )
    # A retained telemetry read by a separate client, then a scrape, until both describe the
    # same moment (the worker keeps serving meanwhile).
    for _ in range(20):
        telemetry = parse_telemetry(_read_retained(fleet.settings, TOPICS.telemetry(WORKER)))
        metrics = _scrape(fleet.metrics_url)
        served = metrics[("splitmq_worker_requests_total", (("outcome", "served"),
                                                            ("worker", WORKER)))]  # fmt: skip
        if served == telemetry.served:
            break
    else:
        pytest.fail("exporter and telemetry never agreed on the served count")
    worker = (("worker", WORKER),)
    assert metrics[("splitmq_queue_capacity", worker)] == telemetry.queue_capacity
    assert metrics[("splitmq_worker_up", worker)] == 1.0
    service = ("splitmq_worker_service_seconds",
               (("model", MODEL), ("split", str(SPLIT)), ("worker", WORKER)))  # fmt: skip
    assert metrics[service] == pytest.approx(telemetry.service_ms[MODEL][SPLIT] / 1000)
    device = (("device", DEVICE), ("model", MODEL))
    count = metrics[("splitmq_request_duration_seconds_count", device)]
    assert count >= 3 and metrics[("splitmq_request_duration_seconds_sum", device)] > 0
    assert metrics[("splitmq_requests_total", (*device, ("outcome", "offloaded")))] >= 3
    assert metrics[("broker_clients_connected", ())] >= 3  # worker, device, watcher, observer


def _read_retained(settings: BrokerSettings, topic: str) -> bytes:
    got: list[bytes] = []
    arrived = threading.Event()

    def keep(message: mqtt.MQTTMessage) -> None:
        if message.payload:
            got.append(bytes(message.payload))
            arrived.set()

    reader = MqttSession(settings, client_id=f"reader-{threading.get_ident()}")
    reader.route(topic, keep)
    reader.start(wait_s=10)
    try:
        assert arrived.wait(10), f"nothing retained on {topic}"
    finally:
        reader.stop(timeout_s=1)
    return got[0]


# -- availability and the monitor (last: these kill the device) -----------------------------------


def test_availability_turns_offline_when_the_device_process_is_killed(fleet: Fleet) -> None:
    _device_served(fleet, 3)
    status = parse_status(_read_retained(fleet.settings, TOPICS.status(DEVICE)))
    assert status.state == "online"
    fleet.device.kill()
    fleet.device.wait(10)

    def offline(snapshot: FleetSnapshot) -> bool:
        view = snapshot.devices.get(DEVICE)
        return view is not None and view.online is False

    assert fleet.watcher.wait_for(offline, 15), "no last will after the device was killed"
    status = parse_status(_read_retained(fleet.settings, TOPICS.status(DEVICE)))
    assert status.state == "offline"  # what the availability template reads
    metrics = _scrape(fleet.metrics_url)
    assert metrics[("splitmq_device_up", (("device", DEVICE),))] == 0.0


def test_monitor_once_prints_the_fleet_as_json(fleet: Fleet) -> None:
    if fleet.device.poll() is None:
        _device_served(fleet, 1)
    done = subprocess.run(
        [sys.executable, "-m", "splitmq.cli", "monitor", "--port", str(fleet.settings.port),
         "--once", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    snapshot = fleet.watcher.snapshot()
    workers = {row["worker"]: row for row in data["workers"]}
    devices = {row["device"]: row for row in data["devices"]}
    telemetry = snapshot.workers[WORKER].telemetry
    state = snapshot.devices[DEVICE].state
    assert telemetry is not None and state is not None
    assert workers[WORKER]["online"] is True
    assert workers[WORKER]["queue_capacity"] == telemetry.queue_capacity
    assert devices[DEVICE]["requests"] == state.requests
    assert devices[DEVICE]["recent_splits"] and set(devices[DEVICE]["recent_splits"]) == {SPLIT}
    assert data["broker"]["clients_connected"] >= 2


def test_monitor_once_into_a_pipe_keeps_whole_names(fleet: Fleet) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "splitmq.cli", "monitor", "--port", str(fleet.settings.port),
         "--once"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert WORKER in done.stdout and DEVICE in done.stdout


def test_grafana_dashboard_queries_only_exported_metrics(fleet: Fleet) -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana" / "splitmq-fleet.json").read_text())
    with urllib.request.urlopen(fleet.metrics_url, timeout=10) as response:
        text = response.read().decode("utf-8")
    # Every family the exporter declares, samples or not (a fixed policy has no uplink estimate).
    exported = set()
    for family in text_string_to_metric_families(text):
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(family.type, "")
        exported |= {family.name, family.name + suffix}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b(splitmq_\w+|broker_\w+)", target["expr"]))
            assert names <= exported, f"{panel['title']}: {names - exported} not exported"
