"""An edge (site) broker's bridge to a secure core: `splitmq broker init DIR --bridge NAME`.

    text = render_bridge(BridgeSpec("edge-a", "core.example:8883", "splitmq", ca, password="..."))
    # connection edge-a / address core.example:8883 / ... / topic splitmq/req/# out 1 / ...

A `$share` group is per broker, so workers connect to the core only; each edge broker serves
its devices and bridges their requests out and the results back in, logged in as a `bridge`
user (`broker.access.bridge_rules`). The topic lines here and the read rules there are the same
filters, so the core's dynamic-security plugin accepts the bridge's subscriptions and nothing
else. MQTT v5 on the bridge keeps ResponseTopic, CorrelationData, expiry and user properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from broker.access import bridge_rules, subtree
from broker.errors import SecureProfileError
from schemas.topics import Topics


@dataclass(frozen=True)
class BridgeSpec:
    """One edge's bridge: its login, the core's address and the files it presents."""

    name: str
    core_address: str
    prefix: str
    cafile: Path
    password: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None


def parse_core_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets) as host and port; anything else is refused."""
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or any(c.isspace() for c in host) or not port_text.isdigit():
        raise SecureProfileError(f"core address {address!r}: expected HOST:PORT")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise SecureProfileError(f"core address {address!r}: port outside 1-65535")
    return host, port


def bridge_topic_lines(prefix: str) -> list[str]:
    """The bridge's `topic` lines, QoS 1 as every splitmq topic: each `out` filter is one the
    bridge role may write, each `in` filter one it may read. Status goes both ways (the edge's
    devices' out, everyone's in); MQTT v5's no-local keeps it from echoing."""
    topics = Topics(prefix)
    status = subtree(topics, "status")
    lines = []
    for rule in bridge_rules(topics):
        if rule.pattern == status:
            lines.append(f"topic {status} both 1")
        elif rule.access == "write" and not rule.pattern.startswith(status.removesuffix("#")):
            lines.append(f"topic {rule.pattern} out 1")
        elif rule.access == "read":
            lines.append(f"topic {rule.pattern} in 1")
    return lines


def _login_lines(spec: BridgeSpec) -> list[str]:
    has_cert = spec.certfile is not None and spec.keyfile is not None
    if spec.password is None and not has_cert:
        raise SecureProfileError(f"bridge {spec.name!r} has neither a password nor a certificate")
    # A core with client certificates asks for the certificate of the login's name and then
    # the password (one that fell back to the certificate's name ignores the password).
    lines = (
        [f"bridge_certfile {spec.certfile}", f"bridge_keyfile {spec.keyfile}"] if has_cert else []
    )
    if spec.password is not None:
        lines += [f"remote_username {spec.name}", f"remote_password {spec.password}"]
    return lines


def render_bridge(spec: BridgeSpec) -> str:
    """The bridge section of the edge broker's mosquitto.conf (no `$`: it may be pasted into a
    launcher template)."""
    parse_core_address(spec.core_address)
    lines = [
        f"# splitmq bridge {spec.name}: an edge broker's link to the core, written by",
        f"# `splitmq broker init --bridge {spec.name}`. Append it to the edge broker's",
        "# mosquitto.conf (or `include_dir` this folder). Keep it private: it holds the login.",
        "#",
        "# Workers must not subscribe at the edge: a share group is per broker, so a worker here",
        "# would take the edge's requests from the core's workers (or answer them twice). Run",
        "# every worker against the core; devices connect to the edge.",
        f"connection {spec.name}",
        f"address {spec.core_address}",
        "bridge_protocol_version mqttv50",
        f"remote_clientid {spec.name}",
        f"bridge_cafile {spec.cafile}",
        "bridge_insecure false",
        *_login_lines(spec),
        "# Subscriptions at the core go with the connection; the edge re-subscribes on reconnect.",
        "cleansession true",
        "restart_timeout 1 2",
        "# The bridge role may not publish the connection notice at the core.",
        "notifications false",
        *bridge_topic_lines(spec.prefix),
    ]
    return "\n".join(lines) + "\n"
