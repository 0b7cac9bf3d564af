"""A stolen login against a broker from `splitmq broker init`, with a real Mosquitto, real
workers and the real device link: whose name a thief can answer in, which catalogs it can
write, how fast revoking it stops it, and what a client certificate proves.

Each test prints one `FIGURE {...}` JSON line (run with `-s`): BENCHMARKS.md quotes them."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.certificates import issue_cert, make_ca
from broker.revocation import revoke_login
from broker.secure_profile import ProfileOptions
from device_node.link import DeviceLink
from device_node.pending import Outcome
from edge_worker.runner import echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from mqtt_session.errors import BrokerConnectError
from schemas.catalogs import trusted_catalogs
from schemas.frame import peek_header
from schemas.messages import (
    ModelCatalogMessage,
    Prediction,
    ResultMessage,
    StatusMessage,
    encode_message,
    parse_catalog,
    parse_status,
)
from schemas.topics import Topics
from tests.support.secure_site import Probe, SecureSite, open_site
from tests.support.worker_clients import echo_frame

pytestmark = pytest.mark.integration
TOPICS = Topics()
GROUP = "splitmq-workers"
DEVICES = ("dA", "dB")
OWNER, THIEF = "w1", "w2"
REFUSED = "Not authorized"
ACCEPTED = ("Success", "No matching subscribers")
FORGED = "forged"
REQUESTS = 42
REVOKE_TARGET_S = 5.0


def _figure(name: str, **values: Any) -> None:
    print("FIGURE " + json.dumps({"figure": name, **values}, sort_keys=True))


@pytest.fixture
def site() -> Iterator[SecureSite]:
    options = ProfileOptions(devices=DEVICES, workers=[OWNER, THIEF], monitors=["mon"])
    with open_site(options) as made:
        yield made


class Thief:
    """Someone outside holding the worker login `THIEF`: joins the share group and answers
    every request it gets with a made-up `ok` result, in three ways, in this order: (1) on
    the owner's result topic, (2) on its own topic claiming to be the owner in the payload,
    (3) under its own name, honestly labelled. Publishing runs in a thread of its own."""

    def __init__(self, site: SecureSite) -> None:
        self.probe = Probe(site.settings(THIEF), THIEF)
        self.probe.client.on_message = self._on_message
        self.seen = 0
        self.on_owner_topic: list[str] = []  # PUBACK reasons of way (1)
        self.claims: list[str] = []  # PUBACK reasons of way (2)
        self.own_name: list[str] = []  # PUBACK reasons of way (3)
        self.answered_at: list[float] = []  # when each PUBACK of way (3) said "accepted"
        self.disconnected_at: list[float] = []

        def disconnected(client: mqtt.Client, *args: Any) -> None:
            self.disconnected_at.append(time.monotonic())
            self.probe._on_disconnect(client, *args)

        self.probe.client.on_disconnect = disconnected
        self._inbox: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()
        self._thread = threading.Thread(target=self._answer_all, daemon=True)

    def start(self) -> Thief:
        self.probe.start()
        self._thread.start()
        joins = [TOPICS.request_shared(GROUP, "echo", 1), TOPICS.direct_requests_to(THIEF)]
        assert self.probe.subscribe(*joins) == ["Granted QoS 1"] * 2
        return self

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(5)
        self.probe.stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(message)

    def _answer_all(self) -> None:
        while (message := self._inbox.get()) is not None:
            try:
                self._answer(message)
            except AssertionError:  # no PUBACK: the connection is gone (revoked)
                continue

    def _answer(self, message: mqtt.MQTTMessage) -> None:
        self.seen += 1
        device = TOPICS.parse_request(message.topic).device_id
        header = peek_header(bytes(message.payload))
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = message.properties.CorrelationData  # type: ignore[union-attr]

        def forged(claimed: str) -> bytes:
            result = ResultMessage(
                request_id=header.request_id,
                status="ok",
                model="echo",
                split=1,
                worker_id=claimed,
                top5=[Prediction(index=7, label=FORGED, score=0.99)],
            )
            return encode_message(result)

        send = self._publish
        self.on_owner_topic.append(send(TOPICS.result(device, OWNER), forged(OWNER), props))
        self.claims.append(send(TOPICS.result(device, THIEF), forged(OWNER), props))
        reason = send(TOPICS.result(device, THIEF), forged(THIEF), props)
        self.own_name.append(reason)
        if reason in ACCEPTED:
            self.answered_at.append(time.monotonic())

    def _publish(self, topic: str, payload: bytes, props: Properties) -> str:
        info = self.probe.client.publish(topic, payload, qos=1, properties=props)
        return str(self.probe._wait(self.probe._pubacks, info.mid))


def _ask(link: DeviceLink, request_id: str, timeout_s: float = 10.0) -> Outcome:
    pending = link.publish_request(
        echo_frame(request_id), request_id=request_id, model="echo", split=1, expiry_s=5
    )
    return pending.future.result(timeout=timeout_s)


def _sender(outcome: Outcome) -> str | None:
    return outcome.message.worker_id if outcome.message is not None else None


def _is_forged(outcome: Outcome) -> bool:
    message = outcome.message
    return message is not None and any(p.label == FORGED for p in message.top5)


# -- answers in another worker's name ------------------------------------------------------------


def test_a_stolen_worker_login_gets_no_forged_result_accepted_in_another_workers_name(
    site: SecureSite,
) -> None:
    thief = Thief(site).start()
    try:
        with EdgeWorker(site.worker_config(OWNER)), DeviceLink(site.settings("dA"), "dA") as link:
            outcomes = [_ask(link, f"r{i}") for i in range(REQUESTS)]
            forged_refused_by_device = link.counters.forged_results
    finally:
        thief.stop()
    forged = [o for o in outcomes if _is_forged(o)]
    in_owners_name = [o for o in forged if _sender(o) != THIEF]
    _figure(
        "forged_results_in_another_workers_name",
        requests=REQUESTS,
        thief_received=thief.seen,
        refused_by_broker=thief.on_owner_topic.count(REFUSED),
        refused_by_device=forged_refused_by_device,
        accepted_in_owners_name=len(in_owners_name),
        accepted_in_thiefs_own_name=len(forged),
        genuine_from_owner=sum(_sender(o) == OWNER and not _is_forged(o) for o in outcomes),
    )
    assert thief.seen > 0, "the share group must hand the thief some requests"
    # Way (1): the broker refuses every result on the owner's topic.
    assert thief.on_owner_topic == [REFUSED] * thief.seen
    # Way (2): the broker takes it (its own topic), the device refuses the claim in the payload.
    assert all(reason in ACCEPTED for reason in thief.claims)
    assert forged_refused_by_device == thief.seen
    # What a stolen login can still do: answer what it receives, in its own name only.
    assert in_owners_name == []
    assert len(forged) == thief.seen
    assert all(_sender(o) == OWNER for o in outcomes if not _is_forged(o))


# -- catalogs ------------------------------------------------------------------------------------


def _read_catalogs(
    site: SecureSite, user: str
) -> tuple[dict[tuple[str, str], ModelCatalogMessage], set[str]]:
    """Every retained catalog and the workers whose retained status is online, as a fresh
    client of `user` sees them."""
    reader = Probe(site.settings(user), user).start()
    try:
        assert reader.subscribe(TOPICS.catalog_all(), TOPICS.status_all()) == ["Granted QoS 1"] * 2
        reader.publish(TOPICS.probe(user))  # retained messages come before this PUBACK's
        time.sleep(0.2)
        with reader._changed:
            messages = [m for m in reader.messages if m.payload]
    finally:
        reader.stop()
    catalogs = {
        tuple(TOPICS.parse_catalog(m.topic)): parse_catalog(m.payload)
        for m in messages
        if m.topic.startswith(f"{TOPICS.prefix}/catalog/")
    }
    statuses = [parse_status(m.payload) for m in messages if "/status/" in m.topic]
    online = {s.node_id for s in statuses if s.state == "online"}
    return catalogs, online  # type: ignore[return-value]


def test_a_stolen_worker_login_cannot_overwrite_a_catalog_it_does_not_own(
    site: SecureSite,
) -> None:
    genuine = echo_model_info().fingerprint
    with EdgeWorker(site.worker_config(OWNER)):
        catalogs, _ = _read_catalogs(site, "dB")
        good = catalogs[("echo", OWNER)]
        poisoned = encode_message(good.model_copy(update={"fingerprint": "poisoned"}))
        thief = Probe(site.settings(THIEF), THIEF).start()
        try:
            theirs = [TOPICS.catalog("echo", OWNER), f"{TOPICS.prefix}/catalog/echo"]
            refused = [thief.publish(t, poisoned, retain=True) for t in theirs]
            own = thief.publish(TOPICS.catalog("echo", THIEF), poisoned, retain=True)
            online = StatusMessage(node_id=THIEF, role="worker", state="online", ts=time.time())
            thief.publish(TOPICS.status(THIEF), encode_message(online), retain=True)
            before, online_before = _read_catalogs(site, "dB")
            revoked = revoke_login(site.profile.directory, THIEF, port=site.broker.port)
            after, online_after = _read_catalogs(site, "dB")
        finally:
            thief.stop()
    chosen_before = trusted_catalogs(before, online_before)
    chosen_after = trusted_catalogs(after, online_after)
    _figure(
        "catalogs_overwritten_by_a_thief",
        attempts_on_others=len(theirs),
        refused=refused.count(REFUSED),
        overwritten=int(before[("echo", OWNER)].fingerprint != genuine),
        thiefs_own_catalog_accepted=own in ACCEPTED,
        retained_thief_catalogs_after_revocation=sum(w == THIEF for _, w in after),
        revocation_cleared=revoked.cleared,
    )
    assert refused == [REFUSED] * len(theirs)
    assert before[("echo", OWNER)].fingerprint == genuine
    assert own in ACCEPTED and before[("echo", THIEF)].fingerprint == "poisoned"
    assert chosen_before["echo"] == (OWNER, before[("echo", OWNER)])
    # Revoked: the thief's catalog is gone and its status offline, so nobody can choose it.
    assert ("echo", THIEF) not in after
    assert THIEF not in online_after and OWNER in online_after
    assert chosen_after["echo"][1].fingerprint == genuine


# -- revocation ----------------------------------------------------------------------------------


def test_revoking_a_stolen_worker_login_stops_its_answers_within_5_s(site: SecureSite) -> None:
    outcomes: list[Outcome] = []
    stop = threading.Event()
    thief = Thief(site).start()
    try:
        with EdgeWorker(site.worker_config(OWNER)), DeviceLink(site.settings("dA"), "dA") as link:

            def traffic() -> None:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    outcomes.append(_ask(link, f"t{i}", timeout_s=8))
                    time.sleep(0.01)

            sender = threading.Thread(target=traffic, daemon=True)
            sender.start()
            time.sleep(1.0)
            revoked_at = time.monotonic()
            revoke_login(site.profile.directory, THIEF, port=site.broker.port)
            returned_at = time.monotonic()
            time.sleep(REVOKE_TARGET_S + 1.0)
            stop.set()
            sender.join(15)
    finally:
        thief.stop()
    forged = [o for o in outcomes if _is_forged(o)]
    last_forged = max(o.received_at for o in forged)
    after = [o for o in outcomes if o.received_at > revoked_at]
    _figure(
        "revocation_stops_a_stolen_worker",
        requests=len(outcomes),
        thief_answers_before=sum(o.received_at <= revoked_at for o in forged),
        thief_answers_after=sum(o.received_at > revoked_at for o in forged),
        last_thief_answer_after_revoke_s=round(max(0.0, last_forged - revoked_at), 4),
        revoke_call_s=round(returned_at - revoked_at, 4),
        answered_by_owner_after=sum(_sender(o) == OWNER for o in after),
        fell_back_after=sum(o.message is None for o in after),
        thief_publishes_refused_after=thief.own_name.count(REFUSED),
        thief_kicked_after_revoke_s=round(thief.disconnected_at[0] - revoked_at, 4)
        if thief.disconnected_at
        else None,
    )
    assert any(o.received_at <= revoked_at for o in forged), "the attack must be real"
    assert last_forged - revoked_at < REVOKE_TARGET_S
    assert not any(o.received_at > returned_at + 0.5 for o in forged)
    assert sum(_sender(o) == OWNER for o in after) > 0
    # The broker closed the thief's connection, and its reconnects (paho retries) stay refused.
    assert thief.disconnected_at and thief.disconnected_at[0] - revoked_at < REVOKE_TARGET_S
    assert not thief.probe.client.is_connected()


# -- client certificates -------------------------------------------------------------------------


@pytest.fixture
def cert_site() -> Iterator[SecureSite]:
    options = ProfileOptions(devices=DEVICES, workers=[OWNER, THIEF], require_client_certs=True)
    with open_site(options) as made:
        assert made.profile.cert_login is not None, made.profile.warnings  # make setup builds it
        yield made


@pytest.fixture
def cert_site_without_compiler(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[SecureSite]:
    """A machine where the certificate-login plugin cannot be built: no C compiler on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path))
    options = ProfileOptions(devices=DEVICES, workers=[OWNER, THIEF], require_client_certs=True)
    with open_site(options) as made:
        yield made


def _cert(site: SecureSite, user: str) -> dict[str, str]:
    chosen = site.profile.users[user]
    return {"certfile": str(chosen.certfile), "keyfile": str(chosen.keyfile)}


def _refusal(settings: BrokerSettings, user: str) -> str | None:
    """Why the broker refused this login; None if it let it in."""
    try:
        Probe(settings, user).start().stop()
    except BrokerConnectError as exc:
        return str(exc)
    return None


def test_one_devices_certificate_cannot_log_in_as_another_device(cert_site: SecureSite) -> None:
    # dA's certificate and key with dB's username and password.
    cross = _refusal(cert_site.settings("dB", tls=_cert(cert_site, "dA")), "dB")
    own_with_wrong_password = _refusal(cert_site.settings("dA", password="not-its-password"), "dA")
    own = _refusal(cert_site.settings("dA"), "dA")
    _figure(
        "cross_certificate_login",
        cross_refused=cross is not None,
        own_certificate_wrong_password_refused=own_with_wrong_password is not None,
        own_login_accepted=own is None,
    )
    assert cross is not None and "refused the connection" in cross
    assert "certificate of another name" in cert_site.broker.log_text()
    assert own_with_wrong_password is not None, "a certificate alone must not be a login"
    assert own is None


def test_without_the_plugin_a_cross_certificate_login_is_the_certificates_own(
    cert_site_without_compiler: SecureSite,
) -> None:
    site = cert_site_without_compiler
    assert site.profile.cert_login is None
    assert any("use_identity_as_username" in w for w in site.profile.warnings)
    probe = Probe(site.settings("dB", tls=_cert(site, "dA")), "dB").start()
    try:
        as_other = [
            probe.subscribe(TOPICS.results_for("dB"))[0],
            probe.publish(TOPICS.request("echo", 1, "dB")),
            probe.publish(TOPICS.status("dB"), retain=True),
        ]
        as_itself = probe.subscribe(TOPICS.results_for("dA"))[0]
    finally:
        probe.stop()
    log = site.broker.log_text()
    assert as_other == [REFUSED] * len(as_other)
    assert as_itself == "Granted QoS 1"
    assert "as dA (" in log and "as dB (" not in log, "the certificate's name is the login"


def test_a_certificate_of_a_foreign_ca_or_none_at_all_is_refused(
    cert_site: SecureSite, tmp_path: Path
) -> None:
    foreign = issue_cert(make_ca("another CA"), "dB", server=False)
    (tmp_path / "dB.crt").write_bytes(foreign.cert_pem())
    (tmp_path / "dB.key").write_bytes(foreign.key_pem())
    attempts = {
        "foreign_ca": cert_site.settings(
            "dB", tls={"certfile": str(tmp_path / "dB.crt"), "keyfile": str(tmp_path / "dB.key")}
        ),
        "no_certificate": cert_site.settings("dB", tls={"certfile": None, "keyfile": None}),
    }
    refused = []
    for name, settings in attempts.items():
        try:
            Probe(settings, "dB").start().stop()
        except BrokerConnectError:
            refused.append(name)
    _figure("certificate_logins_refused", attempts=sorted(attempts), refused=sorted(refused))
    assert sorted(refused) == sorted(attempts)


def test_a_revoked_certificate_holder_is_refused_at_once(cert_site: SecureSite) -> None:
    revoke_login(cert_site.profile.directory, THIEF, port=cert_site.broker.port)
    refusal = _refusal(cert_site.settings(THIEF), THIEF)
    assert refusal is not None and "refused the connection" in refusal


def test_without_the_plugin_a_revoked_certificate_holder_connects_but_may_do_nothing(
    cert_site_without_compiler: SecureSite,
) -> None:
    # With the certificate as the identity Mosquitto asks the plugin for no password, so the
    # disabled flag alone would not stop it: the revocation takes its role away too.
    site = cert_site_without_compiler
    revoke_login(site.profile.directory, THIEF, port=site.broker.port)
    probe = Probe(site.settings(THIEF), THIEF).start()
    try:
        joins = probe.subscribe(TOPICS.request_shared(GROUP, "echo", 1), TOPICS.status_all())
        writes = [probe.publish(TOPICS.result("dA", THIEF)), probe.publish(TOPICS.status(THIEF))]
    finally:
        probe.stop()
    assert joins == [REFUSED, REFUSED]
    assert writes == [REFUSED, REFUSED]


def test_a_revoked_certificate_fails_the_handshake_from_the_brokers_next_start(
    cert_site: SecureSite,
) -> None:
    report = revoke_login(cert_site.profile.directory, THIEF, port=cert_site.broker.port)
    assert report.crl.startswith(f"{THIEF}'s certificate listed"), report.crl
    cert_site.broker.restart()
    refusal = _refusal(cert_site.settings(THIEF), THIEF)
    owner = Probe(cert_site.settings(OWNER), OWNER).start()  # the list names no one else
    owner.stop()
    in_handshake = refusal is not None and "refused the connection" not in refusal
    _figure("revoked_certificate_after_restart", refused_in_handshake=in_handshake)
    # Refused before any login is checked: no CONNACK, the TLS handshake itself failed.
    assert in_handshake, f"a revoked certificate still completed the TLS handshake: {refusal}"
