"""Broker connection settings and the paho-mqtt client factory both runtimes use.

    client = make_client(settings, "worker-1", will=will, manual_ack=True, receive_maximum=64)
    client.on_connect = ...      # subscribe here, so a reconnect restores the subscriptions
    client.on_message = ...
    start_client(client, wait_s=10)

Every client is MQTT v5 with TCP_NODELAY on its socket (paho never sets it; without it, small
packets such as PUBACKs wait up to 40 ms for a delayed ACK), reconnects with exponential backoff,
and has its connection parameters stored with `connect_async`, so paho's network thread connects
and reconnects on its own.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from broker.errors import BrokerConnectError, BrokerSettingsError

PAHO_LOGGER = logging.getLogger("splitmq.mqtt")


class _SocketlessLoopNoise(logging.Filter):
    """paho 2.2's network thread logs "Client is not connected" at ERROR whenever it loops
    without a socket: once after every clean disconnect, and after every failed reconnect.
    The first is no problem and the second is reported by `log_connect_fail` with the
    broker's address, so the line itself is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected.")


PAHO_LOGGER.addFilter(_SocketlessLoopNoise())

# QoS 1 publishes a client keeps in flight (sent, PUBACK pending) before paho queues the rest
# locally. On loopback 20 (paho's default) and 256 gave the same burst throughput (about 2,000
# requests/s through a worker); on a real uplink a window of 20 caps a device at 20 publishes per
# round trip (400/s at 50 ms), so the window is wider than any burst a device makes.
DEFAULT_MAX_INFLIGHT = 256
# Messages paho may queue locally beyond those in flight: 0 = unbounded. A bounded paho queue
# makes publish() fail with MQTT_ERR_QUEUE_SIZE in a burst, i.e. it drops requests; callers
# bound their own rate instead (devices wait for results, workers reply once per request).
DEFAULT_MAX_QUEUED = 0


class TLSSettings(BaseModel):
    """TLS towards the broker. Files are PEM paths; `insecure` skips hostname verification."""

    # Strict like every configuration model (splitmq.configfile): `insecure: 1` is refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ca_certs: Path | None = Field(
        None, strict=False, description="CA bundle that signed the broker's cert"
    )
    certfile: Path | None = Field(None, strict=False, description="client certificate (mutual TLS)")
    keyfile: Path | None = Field(None, strict=False, description="private key of `certfile`")
    insecure: bool = Field(False, description="do not verify the broker's host name (testing)")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSSettings:
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("tls.keyfile is set but tls.certfile is not")
        return self


class BrokerSettings(BaseModel):
    """Where and how to connect to the MQTT broker."""

    # Strict like every configuration model (splitmq.configfile): `port: true` is not port 1.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port")
    username: str | None = Field(None, min_length=1, description="login, if the broker wants one")
    password: SecretStr | None = Field(None, strict=False, description="password of `username`")
    tls: TLSSettings | None = Field(None, description="TLS settings; None = plain TCP")
    # At least 1 s (0 would turn keepalive off). Workers default to 2 s (edge_worker.config).
    keepalive: int = Field(30, ge=1, le=65535, description="MQTT keepalive in seconds")
    client_id: str | None = Field(
        None, min_length=1, description="MQTT client id; None = derived from the node id"
    )
    reconnect_min_delay_s: int = Field(1, ge=1, description="first reconnect delay")
    # Tuned for a broker on the LAN: paho waits 1, 2, 4, 4, ... s between attempts, so after an
    # outage of any length the client is back at most 4 s after the broker (paho's own 30 s cap
    # let offloading resume 14 s after a 17 s outage). An attempt against a down broker costs
    # one refused TCP connect; devices answer locally meanwhile.
    reconnect_max_delay_s: int = Field(4, ge=1, description="reconnect delay cap (doubling)")

    @field_validator("host")
    @classmethod
    def _no_scheme(cls, host: str) -> str:
        if "://" in host:
            raise ValueError(f"host must be a name or address, not a URL: {host!r}")
        return host

    @model_validator(mode="after")
    def _password_needs_user(self) -> BrokerSettings:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s is smaller than reconnect_min_delay_s")
        return self

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class WillMessage:
    """The last will the broker publishes when the client vanishes without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def set_tcp_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open hook: disable Nagle's algorithm on the new socket."""
    setsockopt = getattr(sock, "setsockopt", None)  # websocket wrappers have none
    if setsockopt is not None:
        setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def log_connect_fail(client: mqtt.Client, userdata: Any) -> None:
    """paho's on_connect_fail hook: say which broker is unreachable (paho retries with backoff)."""
    PAHO_LOGGER.warning(
        "cannot connect to the MQTT broker at %s:%s; retrying", client.host, client.port
    )


def connect_properties(
    *, receive_maximum: int | None = None, session_expiry_s: int = 0
) -> Properties:
    """MQTT v5 CONNECT properties: ReceiveMaximum (flow control) and session expiry."""
    props = Properties(PacketTypes.CONNECT)
    if receive_maximum is not None:
        if not 1 <= receive_maximum <= 65535:
            raise BrokerSettingsError(f"receive_maximum must be in 1..65535, got {receive_maximum}")
        props.ReceiveMaximum = receive_maximum
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    return props


def make_client(
    settings: BrokerSettings,
    client_id: str,
    *,
    will: WillMessage | None = None,
    manual_ack: bool = False,
    receive_maximum: int | None = None,
    session_expiry_s: int = 0,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    max_queued: int = DEFAULT_MAX_QUEUED,
    userdata: Any = None,
) -> mqtt.Client:
    """A configured MQTT v5 client whose connection starts with `start_client`.

    `client_id` is used unless `settings.client_id` overrides it. `manual_ack=True` leaves
    every QoS 1 PUBACK to `client.ack(mid, qos)`; combined with `receive_maximum`, the broker
    stops delivering once that many messages are unacknowledged.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id or client_id,
        protocol=mqtt.MQTTv5,
        userdata=userdata,
        manual_ack=manual_ack,
    )
    client.enable_logger(PAHO_LOGGER)
    client.on_socket_open = set_tcp_nodelay
    client.on_connect_fail = log_connect_fail
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    client.reconnect_delay_set(settings.reconnect_min_delay_s, settings.reconnect_max_delay_s)
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls is not None:
        _configure_tls(client, settings.tls)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive,
        # With a session that outlives the connection, only the first connect starts clean.
        clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY if session_expiry_s else True,
        properties=connect_properties(
            receive_maximum=receive_maximum, session_expiry_s=session_expiry_s
        ),
    )
    return client


def start_client(client: mqtt.Client, *, wait_s: float | None = 10.0) -> None:
    """Start paho's network thread (it connects and reconnects by itself); for a bare client
    (benchmark baselines, tests), where `broker.session.MqttSession` is not wanted.

    With `wait_s`, block until the broker has accepted the connection, or stop the thread and
    raise `BrokerConnectError`. Call it after setting `on_connect`: it wraps that callback.
    """
    accepted = threading.Event()
    callback = client.on_connect

    def on_connect(*args: Any) -> None:
        if callback is not None:
            callback(*args)
        if not args[3].is_failure:
            accepted.set()

    client.on_connect = on_connect
    client.loop_start()
    if wait_s is None:
        return
    if not accepted.wait(wait_s):
        client.loop_stop()
        raise BrokerConnectError(
            f"could not connect to the MQTT broker at {client.host}:{client.port} "
            f"within {wait_s:g} s (is it running? are the credentials right?)"
        )


def stop_client(client: mqtt.Client) -> None:
    """Disconnect cleanly (no last will) and stop the network thread."""
    client.disconnect()
    client.loop_stop()


def _configure_tls(client: mqtt.Client, tls: TLSSettings) -> None:
    for name in ("ca_certs", "certfile", "keyfile"):
        path = getattr(tls, name)
        if path is not None and not Path(path).is_file():
            raise BrokerSettingsError(f"tls.{name}: file not found: {path}")
    client.tls_set(
        ca_certs=str(tls.ca_certs) if tls.ca_certs else None,
        certfile=str(tls.certfile) if tls.certfile else None,
        keyfile=str(tls.keyfile) if tls.keyfile else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    if tls.insecure:
        client.tls_insecure_set(True)
