"""`splitmq broker init`: the files it writes, and a broker started from them that serves a
worker and a device configured from those same files, over TLS only."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import SecureProfileError
from broker.launcher import MosquittoBroker
from broker.secure_profile import ProfileOptions, hash_password, init_profile, role_acls
from device_node.config import load_device_config
from edge_worker.runner import echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from mqtt_session.errors import BrokerConnectError
from splitmq.cli import main as splitmq_main
from splitmq_base.cli import EXIT_CONFIG
from tests.support.secure_site import WORKER, SecureSite
from tests.support.worker_clients import Requester, echo_frame, read_catalogs

pytestmark = pytest.mark.integration


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_server_certificate_is_signed_by_the_ca_for_every_name(tmp_path: Path) -> None:
    profile = init_profile(
        tmp_path / "p", ProfileOptions(devices=["cam-1"], server_names=["edge.lan", "10.0.0.5"])
    )
    ca, server = _cert(profile.ca_cert), _cert(profile.server_cert)
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "edge.lan"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    }
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificates_only_for_the_users_that_asked(tmp_path: Path) -> None:
    profile = init_profile(
        tmp_path / "p", ProfileOptions(devices=["cam-1", "cam-2"], client_certs=["cam-2"])
    )
    assert profile.users["cam-1"].certfile is None
    cam2 = profile.users["cam-2"]
    assert cam2.certfile is not None and cam2.keyfile is not None
    cert = _cert(cam2.certfile)
    cert.verify_directly_issued_by(_cert(profile.ca_cert))
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "cam-2"
    assert "keyfile" in profile.client_file("cam-2").read_text()


def test_secrets_are_readable_by_no_one_else(tmp_path: Path) -> None:
    profile = init_profile(
        tmp_path / "p", ProfileOptions(devices=["cam-1"], client_certs=["cam-1"])
    )
    secret = [
        profile.directory / "ca.key",
        profile.server_key,
        profile.dynsec,
        profile.client_file("cam-1"),
        profile.directory / "users" / "cam-1.key",
    ]
    for path in secret:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0, f"{path} is readable by others ({oct(mode)})"
        assert mode & 0o070 in (0, 0o040), f"{path} is more than group-readable ({oct(mode)})"
    password = profile.users["cam-1"].password
    assert password not in profile.dynsec.read_text()
    assert password in profile.client_file("cam-1").read_text()


def test_passwords_are_stored_as_the_plugins_pbkdf2_sha512(tmp_path: Path) -> None:
    profile = init_profile(tmp_path / "p", ProfileOptions(devices=["cam-1"]))
    client = json.loads(profile.dynsec.read_text())["clients"][0]
    salt = base64.b64decode(client["salt"])
    expected = hashlib.pbkdf2_hmac(
        "sha512", profile.users["cam-1"].password.encode(), salt, client["iterations"], 64
    )
    assert base64.b64decode(client["password"]) == expected
    stored = {key: client[key] for key in ("password", "salt", "iterations")}
    assert hash_password(profile.users["cam-1"].password, salt) == stored
    assert hash_password("another password", salt) != stored


def test_devices_send_only_their_own_requests_and_workers_read_only_their_group() -> None:
    device = role_acls("cam-1", "device", share_group="g")
    reads = {a["topic"] for a in device if a["acltype"] == "subscribePattern"}
    assert "splitmq/result/cam-1/+" in reads
    assert not any(topic.startswith("$share") or "result/+" in topic for topic in reads)
    worker = role_acls("w1", "worker", share_group="g")
    subscriptions = {a["topic"] for a in worker if a["acltype"] == "subscribePattern"}
    assert subscriptions == {
        "$share/g/splitmq/req/+/+/+",  # every device's requests, through the group only
        "splitmq/req/+/+/+/w1",  # its own direct requests
        "splitmq/status/+",
        "homeassistant/status",
    }
    sends = {a["topic"] for a in device if a["acltype"] == "publishClientSend"}
    assert {"splitmq/req/+/+/cam-1", "splitmq/req/+/+/cam-1/+"} <= sends
    assert not any(topic.startswith("splitmq/req/") and "cam-1" not in topic for topic in sends)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "at least one"),
        ({"devices": ["a/b"]}, "'/'"),
        ({"devices": ["a"], "workers": ["a"]}, "given twice"),
        ({"devices": ["a"], "client_certs": ["b"]}, "unknown users: b"),
        ({"devices": ["a"], "share_group": "$g"}, "'$'"),
    ],
)
def test_bad_profiles_are_refused(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(SecureProfileError, match=words.replace("$", r"\$")):
        init_profile(tmp_path / "p", ProfileOptions(**kwargs))


def test_an_existing_profile_is_kept_unless_forced(tmp_path: Path) -> None:
    options = ProfileOptions(devices=["cam-1"])
    first = _cert(init_profile(tmp_path / "p", options).ca_cert).serial_number
    with pytest.raises(SecureProfileError, match="--force"):
        init_profile(tmp_path / "p", ProfileOptions(devices=["cam-1"]))
    assert _cert(tmp_path / "p" / "ca.crt").serial_number == first
    second = init_profile(tmp_path / "p", ProfileOptions(devices=["cam-1"], force=True))
    assert _cert(second.ca_cert).serial_number != first


def test_the_cli_writes_a_default_profile_and_refuses_to_overwrite_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "site"
    assert splitmq_main(["broker", "init", str(target)]) == 0
    out = capsys.readouterr().out
    for name in ("device-1", "worker-1", "monitor"):
        assert (target / "users" / f"{name}.yaml").is_file() and name in out
    assert f"splitmq broker --config {target / 'mosquitto.conf'}" in out
    assert splitmq_main(["broker", "init", str(target)]) == EXIT_CONFIG
    assert "--force" in capsys.readouterr().err


def test_the_device_file_is_a_valid_device_config(site: SecureSite) -> None:
    config = load_device_config(site.profile.client_file("cam-1"))
    assert config.device_id == "cam-1" and config.broker.username == "cam-1"
    assert (
        config.broker.tls is not None
        and config.broker.tls.ca_certs == site.profile.ca_cert.resolve()
    )


def test_a_worker_and_a_device_from_the_profile_talk_over_tls(site: SecureSite) -> None:
    with EdgeWorker(site.worker_config()):
        device = Requester(site.settings("cam-1"), device_id="cam-1")
        try:
            ids = [f"tls-{i}" for i in range(10)]
            for rid in ids:
                device.send("echo", 1, echo_frame(rid), rid)
            assert [r.status for r in device.wait(ids)] == ["ok"] * len(ids)
        finally:
            device.close()
    assert f"as {WORKER} " in site.broker.log_text()


def test_a_device_of_the_profile_reads_the_catalog_its_worker_publishes(site: SecureSite) -> None:
    with EdgeWorker(site.worker_config()):
        catalogs = read_catalogs(site.settings("cam-1"), {"echo"})
    assert set(catalogs) == {"echo"}
    assert catalogs["echo"].fingerprint == echo_model_info().fingerprint


def test_plain_tcp_anonymous_and_wrong_passwords_are_refused(site: SecureSite) -> None:
    attempts = [
        site.settings("cam-1", tls=None),  # TLS only
        site.settings("cam-1", username=None, password=None),
        site.settings("cam-1", password="not-the-password"),
    ]
    for settings in attempts:
        client = make_client(settings, "intruder")
        with pytest.raises(BrokerConnectError):
            start_client(client, wait_s=1.5)


def test_required_client_certificates_are_required() -> None:
    base = Path(tempfile.mkdtemp(prefix="splitmq-site-"))
    os.chmod(base, 0o711)  # the broker's unprivileged account must reach the profile
    try:
        _check_required_client_certs(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_required_client_certs(base: Path) -> None:
    profile = init_profile(base / "p", ProfileOptions(devices=["cam-1"], require_client_certs=True))
    user = profile.users["cam-1"]
    assert user.certfile is not None and user.keyfile is not None
    with MosquittoBroker(config_template=profile.config) as broker:
        tls = {"ca_certs": profile.ca_cert}
        common = dict(host=broker.host, port=broker.port, username="cam-1", password=user.password)
        without = BrokerSettings.model_validate({**common, "tls": tls})
        with pytest.raises(BrokerConnectError):
            start_client(make_client(without, "cam-1"), wait_s=1.5)
        tls_with = {**tls, "certfile": user.certfile, "keyfile": user.keyfile}
        client = make_client(BrokerSettings.model_validate({**common, "tls": tls_with}), "cam-1")
        start_client(client, wait_s=10)
        stop_client(client)


def test_every_profile_key_is_ec_p256(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    profile = init_profile(tmp_path / "p", ProfileOptions(devices=["cam-1"]))
    key = load_pem_private_key(profile.server_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
