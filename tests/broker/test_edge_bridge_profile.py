"""`splitmq broker init --bridge`: an edge Mosquitto started with the rendered bridge section
reaches a core Mosquitto started from the same profile, requests published at the edge reach a
core worker through its `$share` group and each result comes back once; the bridge login can do
nothing else at the core. Real Mosquitto processes, a real worker (echo runner)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from broker.access import DEFAULT_SHARE_GROUP
from broker.auth import acl_rules
from broker.launcher import PACKAGE_DIR, MosquittoBroker, free_port
from broker.secure_profile import ProfileOptions, init_profile
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.bench.light_device import LightDevice
from splitmq.cli import main as splitmq_main
from tests.support.secure_site import TOPICS, WORKER, Probe, SecureSite
from tests.support.worker_clients import echo_frame, until_bridged

GRANTED = "Granted QoS 1"
REFUSED = "Not authorized"
BRIDGE = "edge-a"
# The site template's listener and tuning; the rendered bridge section replaces its own bridge.
SITE_CONFIG = PACKAGE_DIR / "mosquitto-site.conf"
BRIDGE_MARK = "# --- Bridge"


@contextmanager
def _core(options: ProfileOptions) -> Iterator[SecureSite]:
    """A profile whose bridges point at a free port, and the core Mosquitto on that port."""
    base = Path(tempfile.mkdtemp(prefix="splitmq-core-"))
    os.chmod(base, 0o711)  # the launcher drops root: its account must pass through
    port = free_port()
    options = options.model_copy(update={"core_address": f"127.0.0.1:{port}"})
    try:
        profile = init_profile(base / "profile", options)
        with MosquittoBroker(port, config_template=profile.config) as broker:
            yield SecureSite(profile, broker)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _edge(core: SecureSite, name: str = BRIDGE) -> Iterator[MosquittoBroker]:
    """An edge Mosquitto: an anonymous plain listener plus `bridges/<name>.conf` as written."""
    site = SITE_CONFIG.read_text(encoding="utf-8")
    bridge = (core.profile.directory / "bridges" / f"{name}.conf").read_text(encoding="utf-8")
    config = core.profile.directory / f"edge-{name}.conf"
    listener = site[site.index("listener ") : site.index(BRIDGE_MARK)]
    config.write_text(listener + bridge, encoding="utf-8")
    with MosquittoBroker(config_template=config) as edge:
        yield edge


@pytest.mark.integration
@pytest.mark.parametrize("client_certs", [False, True], ids=["password", "client-cert"])
def test_requests_at_the_edge_reach_the_cores_share_group_and_results_come_back_once(
    client_certs: bool,
) -> None:
    options = ProfileOptions(workers=[WORKER], bridges=[BRIDGE], require_client_certs=client_certs)
    with _core(options) as core, EdgeWorker(core.worker_config()), _edge(core) as edge:
        device = LightDevice(BrokerSettings(host=edge.host, port=edge.port), "edge-cam").start()
        try:
            until_bridged(device, "warmup")
            before = device.duplicates
            topic = device.topics.request("echo", 1, device.device_id)
            ids = [f"bridged-{i}" for i in range(8)]
            for rid in ids:
                device.send(topic, echo_frame(rid), rid)
            assert device.wait(ids, timeout_s=10)
        finally:
            device.stop()
    results = [device.replies[rid].message for rid in ids]
    assert all(r is not None and r.status == "ok" for r in results)
    assert {r.worker_id for r in results if r} == {WORKER}
    assert device.duplicates == before


@pytest.mark.integration
def test_the_bridge_login_cannot_work_or_answer_at_the_core() -> None:
    with _core(ProfileOptions(workers=[WORKER], bridges=[BRIDGE])) as core:
        bridge = Probe(core.settings(BRIDGE), BRIDGE).start()
        worker = Probe(core.settings(WORKER), WORKER).start()
        try:
            group = TOPICS.requests_shared_all(DEFAULT_SHARE_GROUP)
            forbidden = (group, TOPICS.requests_all(), TOPICS.everything(), "$SYS/#")
            assert bridge.subscribe(*forbidden) == [REFUSED] * len(forbidden)
            for topic in (
                TOPICS.result("edge-cam", WORKER),
                TOPICS.catalog("echo", WORKER),
                TOPICS.telemetry(WORKER),
                "splitmq/other/x",
            ):
                assert bridge.publish(topic) == REFUSED, topic
            # What it is for: the edge's requests out to the workers' group, results back in.
            assert worker.subscribe(group) == [GRANTED]
            assert bridge.subscribe("splitmq/result/#", "splitmq/status/#") == [GRANTED] * 2
            request = TOPICS.request("echo", 1, "edge-cam")
            assert bridge.publish(request, b"request") == "Success"
            worker.wait_for(request, b"request")
            result = TOPICS.result("edge-cam", WORKER)
            assert worker.publish(result, b"result") == "Success"
            bridge.wait_for(result, b"result")
        finally:
            worker.stop()
            bridge.stop()


def test_bridge_files_are_private_and_name_the_core_and_every_direction(tmp_path: Path) -> None:
    options = ProfileOptions(bridges=[BRIDGE], workers=[WORKER], core_address="core.lan:9883")
    profile = init_profile(tmp_path / "p", options)
    conf = profile.directory / "bridges" / f"{BRIDGE}.conf"
    lines = conf.read_text().splitlines()
    password = profile.users[BRIDGE].password
    for line in (
        f"connection {BRIDGE}",
        "address core.lan:9883",
        "bridge_protocol_version mqttv50",
        f"bridge_cafile {(profile.directory / 'bridges' / 'ca.crt').resolve()}",
        f"remote_username {BRIDGE}",
        f"remote_password {password}",
        "cleansession true",
        "topic splitmq/req/# out 1",
        "topic splitmq/result/# in 1",
        "topic splitmq/catalog/# in 1",
    ):
        assert line in lines
    assert any("Workers must not subscribe at the edge" in line for line in lines)
    assert (profile.directory / "bridges" / "ca.crt").read_bytes() == profile.ca_cert.read_bytes()
    if os.geteuid() != 0:  # as root the broker's group may read it too (0640)
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600


def test_with_client_certificates_the_bridge_presents_its_certificate_and_its_password(
    tmp_path: Path,
) -> None:
    options = ProfileOptions(bridges=[BRIDGE], require_client_certs=True, prefix="site/a")
    profile = init_profile(tmp_path / "p", options)
    folder = profile.directory / "bridges"
    text = (folder / f"{BRIDGE}.conf").read_text()
    assert f"bridge_certfile {(folder / f'{BRIDGE}.crt').resolve()}" in text
    assert f"bridge_keyfile {(folder / f'{BRIDGE}.key').resolve()}" in text
    password = profile.users[BRIDGE].password
    assert f"remote_username {BRIDGE}" in text and f"remote_password {password}" in text
    assert "topic site/a/req/# out 1" in text
    # The default core address is the clients' host and port.
    assert "address 127.0.0.1:8883" in text.splitlines()


def test_the_cli_writes_a_bridge_and_refuses_a_bad_core_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "core"
    args = ["broker", "init", str(target), "--worker", "w1", "--bridge", BRIDGE]
    assert splitmq_main([*args, "--core-address", "10.0.0.5:8883"]) == 0
    conf = target / "bridges" / f"{BRIDGE}.conf"
    assert str(conf) in capsys.readouterr().out
    assert "address 10.0.0.5:8883" in conf.read_text().splitlines()
    bad = tmp_path / "bad"
    assert splitmq_main(["broker", "init", str(bad), "--bridge", "e", "--core-address", "x"]) != 0
    assert "HOST:PORT" in capsys.readouterr().err
    assert not (bad / "ca.crt").exists()


def test_the_acl_file_renders_the_bridge_role_from_the_same_rules() -> None:
    lines = acl_rules("bridge", "splitmq", BRIDGE)
    assert "topic write splitmq/req/#" in lines
    assert "topic read splitmq/result/#" in lines
    assert not any("share" in line or "catalog/+/" in line for line in lines)
