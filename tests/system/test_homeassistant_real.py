"""A real Home Assistant 2025.4.4 (headless, its own venv) against a real broker, a real edge
worker and a real `device-node` process: what the README's Home Assistant table promises is
what Home Assistant shows.

Home Assistant is onboarded over HTTP and given the MQTT integration through the REST config
flow. Checked: every promised entity with its unit, device class and state class, its value
against the node's retained state; availability across kill -9 and a restart of the device;
Home Assistant's own restart (its birth message brings the nodes' configs again, the nodes keep
running); `splitmq homeassistant remove` taking a device out of Home Assistant's registry; and
the same run against a `splitmq broker init` profile with the Home Assistant login it creates.

Skipped unless SPLITMQ_HA_VENV names a built venv: `make test-ha` builds it (Python >= 3.13).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
import pytest
import yaml

from broker.launcher import MosquittoBroker
from broker.secure_profile import ProfileOptions, init_profile
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from schemas.discovery import HomeAssistantSettings
from schemas.topics import Topics
from tests.support.home_assistant import HomeAssistant, ha_venv

VENV = ha_venv()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        VENV is None,
        reason="the real Home Assistant stage runs under `make test-ha` (it builds Home "
        "Assistant's venv once with Python >= 3.13 and sets SPLITMQ_HA_VENV)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0"
SPLIT = 5
WORKER = "w-ha"
DEVICE = "cam-ha"
HA_USER = "ha"
TOPICS = Topics()
WAIT_S = 90.0
HA_SETTINGS = {"birth_delay_max_s": 0.5}


# -- what the README promises ------------------------------------------------------------------


@dataclass(frozen=True)
class Promise:
    role: str  # "device" or "worker"
    name: str  # the entity's name, as the README writes it
    device_class: str | None
    unit: str | None
    state_class: str | None


def readme_promises() -> list[Promise]:
    """The rows of the README's Home Assistant entity table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| node | entity |", 1)[1].split("\n\n", 1)[0]
    promises = []
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        role, names, _, kind, state_class = cells[:5]
        device_class, unit = None, None
        if kind != "-":
            parts = [p.strip() for p in kind.split(",")]
            device_class, unit = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        for name in names.split(","):
            promises.append(Promise(role, name.strip(), device_class, unit,
                                    None if state_class == "-" else state_class))  # fmt: skip
    return promises


def test_the_readme_table_is_read_whole() -> None:
    promises = readme_promises()
    assert len(promises) >= 14 and {p.role for p in promises} == {"device", "worker"}


# -- the stage ---------------------------------------------------------------------------------


@dataclass
class Discovery:
    """Discovery configs as they arrive (the retained one first), per node."""

    seen: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        node = message.topic.split("/")[-2]
        payload = json.loads(message.payload) if message.payload else {}
        self.seen.setdefault(node, []).append(payload)


@dataclass
class Stage:
    ha: HomeAssistant
    settings: BrokerSettings  # a login that reads everything (for the checks' own client)
    device_command: list[str]
    device: subprocess.Popen[bytes]
    discovery: Discovery
    retained: dict[str, dict[str, Any]]  # node's state / telemetry topic -> latest payload
    remove_args: list[str]

    def restart_device(self) -> None:
        self.device = subprocess.Popen(self.device_command, cwd=ROOT, stdout=subprocess.DEVNULL)


def _device_command(broker: dict[str, Any], folder: Path) -> list[str]:
    config = {
        "broker": {**broker, "reconnect_max_delay_s": 2},
        "device_id": DEVICE,
        "model": MODEL,
        "codec": "int8",
        "policy": {"kind": "fixed", "split": SPLIT},
        "rate_hz": 2.0,
        "state_interval_s": 0.5,
        "homeassistant": HA_SETTINGS,
    }
    path = folder / "device.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return [sys.executable, "-m", "device_node.cli", "--config", str(path), "-q"]


def _watch(settings: BrokerSettings, stage_retained: dict[str, dict[str, Any]],
           discovery: Discovery) -> mqtt.Client:  # fmt: skip
    client = make_client(settings, "ha-test-watch")

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        if message.topic.startswith("homeassistant/device/"):
            discovery.on_message(c, u, message)
        elif message.payload:
            stage_retained[message.topic] = json.loads(message.payload)

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe([("homeassistant/device/+/config", 1), (TOPICS.device_state(DEVICE), 1),
                     (TOPICS.telemetry(WORKER), 1)])  # fmt: skip

    client.on_message = on_message
    client.on_connect = on_connect
    start_client(client, wait_s=10)
    return client


def _worker_config(settings: BrokerSettings) -> WorkerConfig:
    return WorkerConfig(
        broker=settings,
        worker_id=WORKER,
        models=[ModelEntry(name=MODEL, splits=[SPLIT])],
        device="cpu",
        max_batch=1,
        telemetry_interval_s=0.5,
        homeassistant=HomeAssistantSettings(**HA_SETTINGS),
    )


@dataclass
class Site:
    """A broker and the logins each party uses on it."""

    broker: MosquittoBroker
    worker: BrokerSettings
    device: dict[str, Any]  # the device's `broker:` section
    watcher: BrokerSettings
    ha_form: dict[str, Any]  # the MQTT config flow's broker step
    ha_tls_ca: Path | None
    remove_args: list[str]


@contextlib.contextmanager
def _plain_site() -> Iterator[Site]:
    with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)
        yield Site(broker, settings, {"host": broker.host, "port": broker.port}, settings,
                   {"broker": broker.host, "port": broker.port}, None,
                   ["--host", broker.host, "--port", str(broker.port)])  # fmt: skip


@contextlib.contextmanager
def _secure_site() -> Iterator[Site]:
    # Under a directory the broker's unprivileged account can pass (the launcher drops root).
    base = Path(tempfile.mkdtemp(prefix="splitmq-ha-site-"))
    os.chmod(base, 0o711)
    try:
        options = ProfileOptions(devices=[DEVICE], workers=[WORKER], monitors=["mon"],
                                 homeassistants=[HA_USER, "ha-tools"])  # fmt: skip
        profile = init_profile(base / "profile", options)
        with MosquittoBroker(config_template=profile.config) as broker:

            def section(user: str) -> dict[str, Any]:
                text = profile.client_file(user).read_text(encoding="utf-8")
                broker_section: dict[str, Any] = yaml.safe_load(text)["broker"]
                return {**broker_section, "host": broker.host, "port": broker.port}

            ha = section(HA_USER)
            tools = profile.client_file("ha-tools")
            yield Site(
                broker,
                BrokerSettings.model_validate({**section(WORKER), "reconnect_max_delay_s": 2}),
                section(DEVICE),
                BrokerSettings.model_validate(section("mon")),
                {
                    "broker": broker.host,
                    "port": broker.port,
                    "username": HA_USER,
                    "password": ha["password"],
                },
                Path(ha["tls"]["ca_certs"]),
                ["--config", str(tools), "--host", broker.host, "--port", str(broker.port)],
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=["plain", "secure"])
def stage(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stage]:
    assert VENV is not None
    folder = tmp_path_factory.mktemp(f"ha-{request.param}")
    with _plain_site() if request.param == "plain" else _secure_site() as site:
        retained: dict[str, dict[str, Any]] = {}
        discovery = Discovery()
        watch = _watch(site.watcher, retained, discovery)
        ha = HomeAssistant(VENV, folder / "config")
        command = _device_command(site.device, folder)
        device = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            with EdgeWorker(_worker_config(site.worker)):
                ha.start()
                ha.onboard()
                _add_mqtt(ha, site)
                stage = Stage(ha, site.watcher, command, device, discovery, retained,
                              site.remove_args)  # fmt: skip
                yield stage
                device = stage.device
        finally:
            ha.stop()
            device.kill()
            device.wait(10)
            stop_client(watch)


def _add_mqtt(ha: HomeAssistant, site: Site) -> None:
    """As a user would in the UI: the broker's address and login, then the advanced options
    for MQTT 5 (what splitmq's nodes speak) and, on the secure profile, the CA to trust."""
    tls = {"set_ca_cert": "custom"} if site.ha_tls_ca is not None else {}
    advanced = {**site.ha_form, "protocol": "5", "transport": "tcp", **tls}
    forms = [{**site.ha_form, "advanced_options": True}, advanced]
    if site.ha_tls_ca is not None:  # the form then asks for the file
        forms.append({**advanced, "certificate": ha.upload(site.ha_tls_ca)})
    ha.add_mqtt(*forms, advanced=True)


# -- helpers -----------------------------------------------------------------------------------


def _poll(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def _last_config(stage: Stage, node: str) -> dict[str, Any]:
    """The node's latest discovery config that was not a removal (an empty payload)."""
    return next(c for c in reversed(stage.discovery.seen[node]) if c)


def _node_entities(stage: Stage, node: str) -> dict[str, dict[str, Any]]:
    """Home Assistant's states of `node`'s entities, by the entity's own name."""
    config = _last_config(stage, node)
    device_name = config["dev"]["name"]
    by_friendly = {s["attributes"].get("friendly_name"): s for s in stage.ha.states().values()}
    found = {}
    for component in config["cmps"].values():
        state = by_friendly.get(f"{device_name} {component['name']}")
        if state is not None:
            found[component["name"]] = state
    return found


def _all_entities(stage: Stage, node: str) -> dict[str, dict[str, Any]]:
    _poll(lambda: stage.discovery.seen.get(node), f"{node}'s discovery config")
    config = _last_config(stage, node)

    def complete() -> dict[str, dict[str, Any]] | None:
        entities = _node_entities(stage, node)
        return entities if len(entities) == len(config["cmps"]) else None

    result: dict[str, dict[str, Any]] = _poll(complete, f"all of {node}'s entities in /api/states")
    return result


def _state_topic(node: str) -> str:
    return TOPICS.device_state(node) if node == DEVICE else TOPICS.telemetry(node)


def _expected(stage: Stage, node: str) -> dict[str, str]:
    """Each entity's value as Home Assistant should compute it from the retained payload."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    config = _last_config(stage, node)
    value_json = stage.retained[_state_topic(node)]
    return {
        c["name"]: env.from_string(c["value_template"]).render(value_json=value_json).strip()
        for c in config["cmps"].values()
    }


def _same(shown: str, expected: str) -> bool:
    if expected == "None":  # Home Assistant's MQTT sensor reads the payload "None" as no value
        return shown == "unknown"
    try:
        return abs(float(shown) - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    except ValueError:
        return shown == expected


def _mismatches(stage: Stage, node: str) -> dict[str, tuple[str, str]]:
    expected = _expected(stage, node)
    shown = {name: s["state"] for name, s in _node_entities(stage, node).items()}
    return {n: (shown.get(n, "absent"), v) for n, v in expected.items()
            if not _same(shown.get(n, "absent"), v)}  # fmt: skip


# -- the checks --------------------------------------------------------------------------------


def test_every_promised_entity_exists_with_its_unit_and_classes(stage: Stage) -> None:
    entities = {DEVICE: _all_entities(stage, DEVICE), WORKER: _all_entities(stage, WORKER)}
    for promise in readme_promises():
        node = DEVICE if promise.role == "device" else WORKER
        assert promise.name in entities[node], f"{promise.role} {promise.name!r} not in HA"
        attributes = entities[node][promise.name]["attributes"]
        assert attributes.get("unit_of_measurement") == promise.unit, promise
        assert attributes.get("device_class") == promise.device_class, promise
        assert attributes.get("state_class") == promise.state_class, promise


def test_entity_values_match_the_nodes_retained_state(stage: Stage) -> None:
    _all_entities(stage, DEVICE)
    _poll(lambda: stage.retained.get(TOPICS.device_state(DEVICE), {}).get("last"),
          "the device's first result")  # fmt: skip
    stage.device.send_signal(signal.SIGSTOP)  # hold the device's state still while comparing
    try:
        for node in (DEVICE, WORKER):
            deadline = time.monotonic() + 30
            while (wrong := _mismatches(stage, node)) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not wrong, f"{node}: entity (shown, expected): {wrong}"
    finally:
        stage.device.send_signal(signal.SIGCONT)


def _device_states(stage: Stage) -> list[str]:
    return [s["state"] for s in _node_entities(stage, DEVICE).values()]


def test_entities_turn_unavailable_when_the_node_is_killed_and_return(stage: Stage) -> None:
    _all_entities(stage, DEVICE)
    stage.device.kill()  # SIGKILL: no goodbye, only the broker's last will
    stage.device.wait(10)
    _poll(lambda: set(_device_states(stage)) == {"unavailable"}, "entities unavailable")
    assert all(
        s != "unavailable" for s in (e["state"] for e in _node_entities(stage, WORKER).values())
    )
    stage.restart_device()
    _poll(lambda: "unavailable" not in _device_states(stage), "entities back after restart")


def test_restarted_home_assistant_gets_the_nodes_back_without_restarting_them(
    stage: Stage,
) -> None:
    _all_entities(stage, DEVICE)
    device_pid = stage.device.pid
    before = {node: len(stage.discovery.seen.get(node, [])) for node in (DEVICE, WORKER)}
    stage.ha.stop()
    stage.ha.start()
    # Its birth message (homeassistant/status = online) made each node announce itself again.
    for node in (DEVICE, WORKER):
        _poll(lambda n=node: len(stage.discovery.seen.get(n, [])) > before[n],  # type: ignore[misc]
              f"{node} re-announced after the birth message")  # fmt: skip
        _all_entities(stage, node)

    def shown() -> dict[str, str]:
        return {name: s["state"] for name, s in _node_entities(stage, DEVICE).items()}

    def with_values() -> bool:
        states = shown()
        return "unavailable" not in states.values() and states.get("Prediction") != "unknown"

    _poll(with_values, "device entities with values")
    assert stage.device.pid == device_pid and stage.device.poll() is None


def test_homeassistant_remove_takes_the_device_out_of_the_registry(stage: Stage) -> None:
    _all_entities(stage, DEVICE)

    def registered() -> list[str]:
        return [
            d["name"] for d in stage.ha.devices() if any(DEVICE in str(i) for i in d["identifiers"])
        ]

    assert registered(), "the device is not in Home Assistant's device registry"
    stage.device.kill()  # decommissioned: a running node would announce itself again on a birth
    stage.device.wait(10)
    done = subprocess.run(
        [sys.executable, "-m", "splitmq.cli", "homeassistant", "remove", *stage.remove_args,
         DEVICE],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _poll(lambda: not registered(), "the device gone from Home Assistant's registry")
    assert not _node_entities(stage, DEVICE)
    assert _node_entities(stage, WORKER), "the worker went too"
