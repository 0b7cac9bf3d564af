"""Revoking a login of a `splitmq broker init` profile, on the running broker.

    report = revoke_login(Path("site"), "w2", port=8883)
    # w2 is disabled and without its role, kicked off, and its retained state is gone

The profile's `control` login (users/splitmq-control.yaml, never given to a node) sends the
dynamic-security plugin's commands on `$CONTROL/dynamic-security/v1`, which take effect at once
and the same change is written into dynamic-security.json for the broker's next start:

1. `disableClient`: no new password login, and the plugin kicks the connected client.
2. `removeClientRole`: where a profile fell back to the certificate as the identity
   (`use_identity_as_username`, no certificate-login plugin) Mosquitto never asks the plugin for
   a password, so a disabled login would still connect; without a role every publish and
   subscription of it is refused.
3. The revoked node's retained messages are replaced: its status says `offline` (so devices
   stop sending to it and fall back at once), its telemetry and its model catalogs are cleared,
   so nothing it published outlives the revocation.

With client certificates the login's certificate also goes into the profile's revocation list
(crl.pem, signed with ca.key where the profile still holds it), so from the broker's next start
its TLS handshake fails. Mosquitto 2.0 reads the list at start only (a SIGHUP reloads neither
CA nor list), which is why the plugin commands above come first.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from broker.errors import SecureProfileError
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from mqtt_session.errors import BrokerConnectError
from schemas.messages import StatusMessage, encode_message
from schemas.topics import Topics

CONTROL_USER = "splitmq-control"
CRL_NAME = "crl.pem"  # the CA's revocation list, in profiles with client certificates
COMMAND_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
WAIT_S = 5.0


@dataclass
class RevocationReport:
    """What `revoke_login` did."""

    name: str
    role: str
    commands: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # retained topics replaced or removed
    seconds: float = 0.0
    crl: str = "none: the profile has no client certificates"  # what became of crl.pem


def control_settings(profile_dir: Path, **changes: Any) -> BrokerSettings:
    """The control login's broker section, with `changes` (host, port) applied."""
    path = Path(profile_dir) / "users" / f"{CONTROL_USER}.yaml"
    try:
        section = yaml.safe_load(path.read_text(encoding="utf-8"))["broker"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise SecureProfileError(
            f"{path}: no control login ({exc}); a profile written before revocation existed "
            "needs `splitmq broker init --force` (new files for every client)"
        ) from exc
    section.update({k: v for k, v in changes.items() if v is not None})
    return BrokerSettings.model_validate(section)


def revoke_in_file(profile_dir: Path, name: str) -> tuple[str, str]:
    """Disable `name` and take its role away in the profile's dynamic-security.json, so the
    revocation survives a broker restart (the running plugin cannot always write the file: the
    broker's account only reads it); (role, role name) it had."""
    path = Path(profile_dir) / "dynamic-security.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SecureProfileError(f"cannot read {path}: {exc}") from exc
    client = next((c for c in config.get("clients", []) if c.get("username") == name), None)
    if client is None:
        raise SecureProfileError(f"{path} has no login {name!r}")
    # The profile names each role `<role>-<login>` and each client's text "splitmq <role>" (which
    # still says the role once a first revocation took the role away).
    held = [r.get("rolename") for r in client.get("roles", []) if isinstance(r, dict)]
    textname = str(client.get("textname", "")).split()
    rolename = held[0] if held and held[0] else f"{textname[-1] if textname else 'node'}-{name}"
    client["disabled"] = True
    client["roles"] = []
    try:
        # In place: the file keeps its owner and mode (the broker's group may read it).
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SecureProfileError(f"cannot write {path}: {exc}") from exc
    return rolename.split("-", 1)[0], rolename


def revoke_in_crl(profile_dir: Path, name: str) -> str:
    """Add `name`'s certificate to the profile's revocation list; what was done, in words."""
    # Here, not at the top: only a profile with certificates needs cryptography (`broker` extra).
    from broker.certificates import load_pair, make_crl, revoked_serials, serial_of

    directory = Path(profile_dir)
    crl, key, cert = directory / CRL_NAME, directory / "ca.key", directory / "users" / f"{name}.crt"
    if not cert.exists():
        return f"unchanged: {name} has no certificate in the profile"
    if not key.exists():
        return f"unchanged: no ca.key in {directory} (kept offline): add {name}'s serial there"
    try:
        ca = load_pair((directory / "ca.crt").read_bytes(), key.read_bytes())
        serials = revoked_serials(crl.read_bytes()) | {serial_of(cert.read_bytes())}
        crl.write_bytes(make_crl(ca, serials))  # in place: it keeps its mode for the broker
    except (OSError, ValueError) as exc:
        raise SecureProfileError(f"cannot update {crl}: {exc}") from exc
    return f"{name}'s certificate listed in {crl.name} ({len(serials)} in all; from the next start)"


def revoke_login(
    profile_dir: Path,
    name: str,
    *,
    host: str | None = None,
    port: int | None = None,
    prefix: str = "splitmq",
    wait_s: float = WAIT_S,
) -> RevocationReport:
    """Revoke `name` on the broker running the profile in `profile_dir` (see the module
    docstring); a `SecureProfileError` if the broker refuses or does not answer in `wait_s`."""
    if name == CONTROL_USER:
        raise SecureProfileError(f"{CONTROL_USER} revokes others; it cannot revoke itself")
    started = time.monotonic()
    settings = control_settings(profile_dir, host=host, port=port)
    role, rolename = revoke_in_file(profile_dir, name)
    report = RevocationReport(name, role)
    if (Path(profile_dir) / CRL_NAME).exists():
        report.crl = revoke_in_crl(profile_dir, name)
    session = _ControlSession(settings, wait_s)
    try:
        session.start()
    except BrokerConnectError as exc:
        raise SecureProfileError(
            f"{name} is revoked in the profile's file (from the broker's next start on), but the "
            f"running broker could not be told: {exc}"
        ) from exc
    try:
        commands = [
            {"command": "disableClient", "username": name},
            {"command": "removeClientRole", "username": name, "rolename": rolename},
        ]
        session.run(commands, ignore=("Role not found",))
        report.commands = [c["command"] for c in commands]
        report.cleared = session.clear_retained(Topics(prefix), name, role)
    finally:
        session.stop()
    report.seconds = time.monotonic() - started
    return report


class _ControlSession:
    """One connection of the control login: commands with their responses, retained state."""

    def __init__(self, settings: BrokerSettings, wait_s: float) -> None:
        self.wait_s = wait_s
        self.client = make_client(settings, CONTROL_USER)
        self.client.on_message = self._on_message
        self._changed = threading.Condition()
        self._messages: list[mqtt.MQTTMessage] = []

    def start(self) -> None:
        start_client(self.client, wait_s=self.wait_s)

    def stop(self) -> None:
        stop_client(self.client)

    def run(self, commands: list[dict[str, Any]], *, ignore: tuple[str, ...] = ()) -> None:
        """Send `commands` and wait for the plugin's answer; any error not in `ignore` raises."""
        self._subscribe(RESPONSE_TOPIC)
        self.client.publish(COMMAND_TOPIC, json.dumps({"commands": commands}), qos=1)
        answer = self._wait(lambda m: m.topic == RESPONSE_TOPIC)
        responses = json.loads(answer.payload).get("responses", [])
        errors = [r for r in responses if r.get("error") and r["error"] not in ignore]
        if len(responses) != len(commands) or errors:
            raise SecureProfileError(f"the broker refused the revocation: {responses}")

    def clear_retained(self, topics: Topics, name: str, role: str) -> list[str]:
        """Replace `name`'s retained status with "offline" and remove its other retained
        messages (telemetry, catalogs); the topics touched."""
        marker = topics.probe(CONTROL_USER)
        filters = [topics.status(name), topics.telemetry(name), topics.catalogs_from(name)]
        self._subscribe(*filters, marker)
        # Retained messages come before anything published after the SUBACK: the marker's
        # arrival means all of them are in.
        self.client.publish(marker, b"", qos=1)
        self._wait(lambda m: m.topic == marker)
        with self._changed:
            held = sorted({m.topic for m in self._messages if m.retain and m.payload})
        for topic in held:
            payload = b""
            if topic == topics.status(name) and role in ("worker", "device"):
                status = StatusMessage(node_id=name, role=role, state="offline", ts=time.time())
                payload = encode_message(status)
            self.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(self.wait_s)
        return held

    def _subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe([(f, 1) for f in filters])
        if not done.wait(self.wait_s):
            raise SecureProfileError("the broker did not acknowledge the control subscription")

    def _wait(self, wanted: Any) -> mqtt.MQTTMessage:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((m for m in self._messages if wanted(m)), None), self.wait_s
            )
        if found is None:
            raise SecureProfileError(f"no answer from the broker within {self.wait_s:g} s")
        return found

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()
