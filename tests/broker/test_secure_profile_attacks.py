"""Attacks on a broker started from `splitmq broker init`, each with a real Mosquitto and real
clients logged in as the profile's users. Every attack must fail; where the plain or the
acl_file broker lets it through, a contrast test shows the attack is real."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.auth import BrokerUser
from broker.launcher import MosquittoBroker
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from tests.support.secure_site import DEVICES, MONITOR, TOPICS, WAIT_S, WORKER, Probe, SecureSite
from tests.support.worker_clients import Requester, echo_frame

pytestmark = pytest.mark.integration
GRANTED = "Granted QoS 1"
REFUSED = "Not authorized"
# PUBACK reasons of an accepted publish (MQTT v5 says 0x10 when nobody subscribes).
ACCEPTED = ("Success", "No matching subscribers")
SHARE_GROUP = "splitmq-workers"


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    """Probes created by a test, stopped after it."""
    started: list[Probe] = []
    yield started
    for probe in started:
        probe.stop()


def _login(site: SecureSite, user: str, probes: list[Probe], client_id: str | None = None) -> Probe:
    probe = Probe(site.settings(user), client_id or user).start()
    probes.append(probe)
    return probe


# -- client id takeover --------------------------------------------------------------------------


def test_an_impostor_with_the_workers_client_id_cannot_kick_the_worker(
    site: SecureSite, probes: list[Probe]
) -> None:
    worker = _login(site, WORKER, probes)
    impostor = _login(site, DEVICES[0], probes, client_id=WORKER)
    # The impostor's CONNECT is done once its SUBACK is back; the worker must still be on.
    assert impostor.subscribe(TOPICS.results_for(DEVICES[0])) == [GRANTED]
    assert worker.publish(TOPICS.telemetry(WORKER), b"still here") in ACCEPTED
    assert worker.disconnects == 0
    log = site.broker.log_text()
    assert f"as {DEVICES[0]} (" in log, "the impostor's client id is its login"
    assert "already connected, closing old connection" not in log


def test_without_the_profile_the_same_client_id_kicks_the_worker(broker: MosquittoBroker) -> None:
    # Contrast on the plain broker: the takeover is real (and each side then kicks the other).
    settings = BrokerSettings(host=broker.host, port=broker.port)
    worker = Probe(settings, WORKER).start()
    impostor = Probe(settings, WORKER).start()
    try:
        with worker._changed:
            kicked = worker._changed.wait_for(lambda: worker.disconnects > 0, WAIT_S)
        assert kicked, "the plain broker let both clients keep the same id"
    finally:
        impostor.stop()
        worker.stop()


# -- results of other devices --------------------------------------------------------------------


def test_a_device_cannot_subscribe_to_another_devices_results(
    site: SecureSite, probes: list[Probe]
) -> None:
    attacker = _login(site, DEVICES[0], probes)
    stolen = [
        TOPICS.results_for(DEVICES[1]),
        TOPICS.result(DEVICES[1], WORKER),
        TOPICS.result_all(),
        f"{TOPICS.prefix}/result/+",
        f"{TOPICS.prefix}/result/#",
        f"{TOPICS.prefix}/#",
        "#",
    ]
    assert attacker.subscribe(*stolen) == [REFUSED] * len(stolen)
    assert attacker.subscribe(TOPICS.results_for(DEVICES[0])) == [GRANTED]


def test_a_device_cannot_publish_results_for_another_device(
    site: SecureSite, probes: list[Probe]
) -> None:
    victim = _login(site, DEVICES[1], probes)
    assert victim.subscribe(TOPICS.results_for(DEVICES[1])) == [GRANTED]
    attacker = _login(site, DEVICES[0], probes)
    assert attacker.publish(TOPICS.result(DEVICES[1], WORKER), b"forged") == REFUSED
    assert attacker.publish(TOPICS.result(DEVICES[1], DEVICES[0]), b"forged") == REFUSED
    # The victim receives what a worker sends afterwards, and never the forgery.
    worker = _login(site, WORKER, probes)
    assert worker.publish(TOPICS.result(DEVICES[1], WORKER), b"genuine") in ACCEPTED
    victim.wait_for(TOPICS.result(DEVICES[1], WORKER), b"genuine")
    assert victim.received(TOPICS.result(DEVICES[1], WORKER)) == [b"genuine"]
    assert victim.received(TOPICS.result(DEVICES[1], DEVICES[0])) == []


# -- requests in another device's name -----------------------------------------------------------


def test_a_device_cannot_publish_on_another_devices_request_topics(
    site: SecureSite, probes: list[Probe]
) -> None:
    attacker = _login(site, DEVICES[0], probes)
    theirs = [
        TOPICS.request("echo", 1, DEVICES[1]),
        TOPICS.request_direct("echo", 1, DEVICES[1], WORKER),
        f"{TOPICS.prefix}/req/echo/1",  # the layout without a device level
        f"{TOPICS.prefix}/req/echo/1/{DEVICES[0]}/{WORKER}/extra",
    ]
    for topic in theirs:
        assert attacker.publish(topic, b"x") == REFUSED, topic
    # Its own request topics stay open (nobody subscribes here: "No matching subscribers").
    for topic in (
        TOPICS.request("echo", 1, DEVICES[0]),
        TOPICS.request_direct("echo", 1, DEVICES[0], WORKER),
    ):
        assert attacker.publish(topic, b"x") in ACCEPTED, topic


def test_a_request_with_another_devices_response_topic_gets_no_answer_in_its_results(
    site: SecureSite,
) -> None:
    # The confused deputy: the attacker sends its own image on its own topic, with the
    # victim's ResponseTopic and a guessed CorrelationData.
    with EdgeWorker(site.worker_config()) as worker:
        attacker = Requester(site.settings(DEVICES[0]), device_id=DEVICES[0])
        victim = Requester(site.settings(DEVICES[1]), device_id=DEVICES[1])
        try:
            for rid in ("victim-next-1", "victim-next-2"):
                attacker.send("echo", 1, echo_frame(rid), rid, reply_to=victim.topic)
            attacker.send("echo", 1, echo_frame("attacker-own"), "attacker-own")
            # One connection, in order: the attacker's own reply means the forgeries were seen.
            assert attacker.wait(["attacker-own"])[0].status == "ok"
            # And the worker answers the victim in order, so a forged reply would come first.
            victim.send("echo", 1, echo_frame("victim-own"), "victim-own")
            assert victim.wait(["victim-own"])[0].status == "ok"
            assert worker.link.foreign_reply_topics == 2
        finally:
            attacker.close()
            victim.close()
    assert sorted(victim.results) == ["victim-own"]
    assert victim.correlations == [b"victim-own"]
    assert sorted(attacker.results) == ["attacker-own"]


# -- the workers' share group --------------------------------------------------------------------


def test_a_device_cannot_join_the_workers_share_group(
    site: SecureSite, probes: list[Probe]
) -> None:
    attacker = _login(site, DEVICES[0], probes)
    joins = [
        f"$share/{SHARE_GROUP}/{TOPICS.prefix}/req/#",
        TOPICS.request_shared(SHARE_GROUP, "echo", 1),
        TOPICS.request_direct_filter("echo", 1, WORKER),
        f"$share/other/{TOPICS.prefix}/req/#",
        f"{TOPICS.prefix}/req/#",
    ]
    assert attacker.subscribe(*joins) == [REFUSED] * len(joins)
    # With the attacker refused, every request reaches the real worker.
    with EdgeWorker(site.worker_config()):
        device = Requester(site.settings(DEVICES[1]), device_id=DEVICES[1])
        try:
            ids = [f"share-{i}" for i in range(40)]
            for rid in ids:
                device.send("echo", 1, echo_frame(rid), rid)
            assert [r.status for r in device.wait(ids)] == ["ok"] * len(ids)
        finally:
            device.close()
    assert attacker.messages == []


def test_an_acl_file_does_not_refuse_subscriptions_in_mosquitto_2_0() -> None:
    # Why the profile uses the dynamic-security plugin: with broker/mosquitto-secure.conf's
    # acl_file, the same SUBSCRIBE is granted (deliveries are then dropped at the read check).
    users = {"cam-1": BrokerUser("pw", "device"), "w1": BrokerUser("pw", "worker")}
    with MosquittoBroker(users=users) as broker:
        settings = BrokerSettings(
            host=broker.host, port=broker.port, username="cam-1", password="pw"
        )
        attacker = Probe(settings, "cam-1").start()
        try:
            join = f"$share/{SHARE_GROUP}/{TOPICS.prefix}/req/#"
            assert attacker.subscribe(join) == [GRANTED]
        finally:
            attacker.stop()


def test_a_worker_reads_requests_only_through_its_group(
    site: SecureSite, probes: list[Probe]
) -> None:
    worker = _login(site, WORKER, probes)
    assert worker.subscribe(TOPICS.request_shared(SHARE_GROUP, "echo", 1)) == [GRANTED]
    assert worker.subscribe(TOPICS.request_direct_filter("echo", 1, WORKER)) == [GRANTED]
    outside = [
        f"{TOPICS.prefix}/req/#",
        f"{TOPICS.prefix}/req/echo/1/+",
        f"$share/other/{TOPICS.prefix}/req/#",
        TOPICS.request_direct_filter("echo", 1, "w2"),
        "#",
    ]
    assert worker.subscribe(*outside) == [REFUSED] * len(outside)


# -- status and telemetry of others --------------------------------------------------------------


def test_a_device_cannot_publish_a_workers_status_or_telemetry(
    site: SecureSite, probes: list[Probe]
) -> None:
    monitor = _login(site, MONITOR, probes)
    assert monitor.subscribe(f"{TOPICS.prefix}/#") == [GRANTED]
    attacker = _login(site, DEVICES[0], probes)
    spoofs = [TOPICS.status(WORKER), TOPICS.telemetry(WORKER), TOPICS.status(DEVICES[1])]
    for topic in spoofs:
        assert attacker.publish(topic, b'{"state": "offline"}', retain=True) == REFUSED
    assert attacker.publish(TOPICS.status(DEVICES[0]), b"own", retain=True) in ACCEPTED
    worker = _login(site, WORKER, probes)
    assert worker.publish(TOPICS.status(WORKER), b"online", retain=True) in ACCEPTED
    monitor.wait_for(TOPICS.status(WORKER), b"online")
    for topic in spoofs:
        assert b'{"state": "offline"}' not in monitor.received(topic)
    # A device arriving later gets the worker's own retained status, not the spoof.
    late = _login(site, DEVICES[1], probes)
    assert late.subscribe(TOPICS.status_all()) == [GRANTED]
    late.wait_for(TOPICS.status(WORKER), b"online")
    assert late.received(TOPICS.status(WORKER)) == [b"online"]


def test_a_worker_cannot_speak_for_another_node(site: SecureSite, probes: list[Probe]) -> None:
    worker = _login(site, WORKER, probes)
    requests = TOPICS.request("echo", 1, DEVICES[0])
    for topic in (TOPICS.status(DEVICES[0]), TOPICS.telemetry("w2"), requests):
        assert worker.publish(topic, b"x") == REFUSED


def test_a_monitor_reads_everything_and_publishes_nothing(
    site: SecureSite, probes: list[Probe]
) -> None:
    monitor = _login(site, MONITOR, probes)
    assert monitor.subscribe(f"{TOPICS.prefix}/#", "$SYS/#") == [GRANTED, GRANTED]
    requests = TOPICS.request("echo", 1, DEVICES[0])
    for topic in (TOPICS.status(WORKER), requests, TOPICS.result(DEVICES[0], WORKER)):
        assert monitor.publish(topic, b"x") == REFUSED
