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
import os
import socket
import ssl
import stat
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from mqtt_session.errors import BrokerConnectError, BrokerSettingsError
from splitmq_base.models import STRICT

PAHO_LOGGER = logging.getLogger("splitmq.mqtt")
LOG = logging.getLogger(__name__)


class _SocketlessLoopNoise(logging.Filter):
    """paho 2.2's network thread logs "Client is not connected" at ERROR whenever it loops
    without a socket: once after every clean disconnect, and after every failed reconnect.
    The first is no problem and the second is reported by `log_connect_fail` with the
    broker's address, so the line itself is dropped. "failed to receive on socket", logged at
    ERROR when the broker goes away, is an expected event paho recovers from: a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("failed to receive on socket") and record.levelno > logging.WARNING:
            # A broker restart or a dropped link: paho reconnects, the session says so.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return not message.startswith("Client is not connected.")


PAHO_LOGGER.addFilter(_SocketlessLoopNoise())

# Mosquitto 2.0 refuses a PUBLISH over its message_size_limit (the site's frame limit) with
# PUBACK reason code 0x95, "Packet too large", which MQTT 5 lists for CONNACK and DISCONNECT
# only. paho 2.2 takes such a PUBACK for a protocol error: it drops the connection, resends the
# message on reconnect and is refused again, forever. Accepting the code in a PUBACK (and a
# PUBREC, its QoS 2 twin) turns it into the refusal it is: on_publish gets the reason code.
PACKET_TOO_LARGE = 0x95


def _accept_packet_too_large_in_acks() -> None:
    names = {
        code: {name: list(packets) for name, packets in by_name.items()}
        for code, by_name in ReasonCode.names.items()
    }
    for packets in names[PACKET_TOO_LARGE].values():
        for packet in (PacketTypes.PUBACK, PacketTypes.PUBREC):
            if packet not in packets:
                packets.append(packet)
    ReasonCode.names = MappingProxyType(names)


_accept_packet_too_large_in_acks()

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

    # Strict like every configuration model (splitmq_base.configfile): `insecure: 1` is refused.
    model_config = STRICT

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

    # Strict like every configuration model (splitmq_base.configfile): `port: true` is not port 1.
    model_config = STRICT

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or address")
    port: int = Field(
        1883,
        ge=1,
        le=65535,
        description="broker TCP port: 1883 is MQTT's standard; `splitmq broker` picks a free "
        "one instead and prints the flags that reach it",
    )
    username: str | None = Field(None, min_length=1, description="login, if the broker wants one")
    password: SecretStr | None = Field(None, strict=False, description="password of `username`")
    password_env: str | None = Field(
        None, min_length=1, description="environment variable holding the password instead"
    )
    password_file: Path | None = Field(
        None, strict=False, description="file whose first line is the password instead"
    )
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
        given = [
            key
            for key in ("password", "password_env", "password_file")
            if getattr(self, key) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are set: give the password one way only")
        if given and self.username is None:
            raise ValueError(f"{given[0]} is set but username is not")
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s is smaller than reconnect_min_delay_s")
        return self

    def resolve_password(self) -> str | None:
        """The password from `password`, the variable `password_env` or `password_file`.

        Resolved when a client is made, not at validation, so a config can be checked on a
        machine that lacks the secret. A password file readable by group or others is used with
        a warning, not refused: container secret mounts are often 0444 or 0644.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise BrokerSettingsError(
                    f"password_env: environment variable {self.password_env} is unset or empty"
                )
            return value
        if self.password_file is not None:
            return _read_password_file(self.password_file)
        return None

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


def _read_password_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerSettingsError(f"password_file: cannot read {path}: {exc}") from exc
    password = first.rstrip("\r\n")
    if not password:
        raise BrokerSettingsError(f"password_file: the first line of {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        LOG.warning(
            "password_file %s is readable by group or others (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return password


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


# Per client: the cause of its latest failed connection attempt, and the TLS causes already
# reported (each distinct one is logged once at ERROR, not on every retry).
_LAST_FAIL: weakref.WeakKeyDictionary[mqtt.Client, str] = weakref.WeakKeyDictionary()
_TLS_REPORTED: weakref.WeakKeyDictionary[mqtt.Client, set[str]] = weakref.WeakKeyDictionary()
_TLS_CLIENTS: weakref.WeakSet[mqtt.Client] = weakref.WeakSet()  # made with `tls` settings
# Clients whose socket is open but whose CONNACK has not come yet: a close in between is a failed
# connection attempt that paho reports only as a disconnect.
_AWAITING_CONNACK: weakref.WeakSet[mqtt.Client] = weakref.WeakSet()
_CLOSED_EARLY: weakref.WeakKeyDictionary[mqtt.Client, int] = weakref.WeakKeyDictionary()
# A plain client closed before CONNACK this many times in a row is talking to a TLS listener (or
# to something that is no MQTT broker): waiting longer for it changes nothing.
HOPELESS_AFTER = 2
PLAIN_TO_TLS = (
    "the broker closed the connection before answering CONNECT: is the port a TLS listener? "
    "plain MQTT was sent (give the broker's CA: --tls-ca FILE, or broker.tls.ca_certs)"
)
CLOSED_BEFORE_CONNACK = "the broker closed the connection before answering CONNECT"


def open_socket(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open hook: TCP_NODELAY, and wait for the CONNACK."""
    set_tcp_nodelay(client, userdata, sock)
    _AWAITING_CONNACK.add(client)


def note_connack(client: mqtt.Client) -> None:
    """Call from on_connect: the broker answered (accepted or refused) this connection."""
    _AWAITING_CONNACK.discard(client)
    _CLOSED_EARLY.pop(client, None)


def hopeless(client: mqtt.Client) -> bool:
    """Whether a plain client was closed before CONNACK on every one of its latest attempts."""
    return client not in _TLS_CLIENTS and _CLOSED_EARLY.get(client, 0) >= HOPELESS_AFTER


def wait_or_give_up(
    event: threading.Event,
    client: mqtt.Client,
    wait_s: float,
    refused: threading.Event | None = None,
) -> bool:
    """Wait up to `wait_s` for `event`, but stop early once `client` is `hopeless` or the
    broker `refused` it."""
    deadline = time.monotonic() + wait_s
    while not event.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
        gave_up = hopeless(client) or (refused is not None and refused.is_set())
        if gave_up or time.monotonic() >= deadline:
            return False
    return True


def note_disconnect(client: mqtt.Client) -> None:
    """Call from on_disconnect: a connection closed before its CONNACK is a failed attempt.

    Mosquitto resets a TLS listener's connection when plain MQTT arrives instead of a TLS
    ClientHello; without this the only trace would be "is it running?" after the wait.
    """
    if client not in _AWAITING_CONNACK:
        return
    _AWAITING_CONNACK.discard(client)
    _CLOSED_EARLY[client] = _CLOSED_EARLY.get(client, 0) + 1
    cause = CLOSED_BEFORE_CONNACK if client in _TLS_CLIENTS else PLAIN_TO_TLS
    first = _LAST_FAIL.get(client) != cause
    _LAST_FAIL[client] = cause
    if first:
        PAHO_LOGGER.error(
            "no MQTT connection to the broker at %s:%s: %s", client.host, client.port, cause
        )


def describe_connect_error(exc: BaseException | None, *, tls: bool = False) -> str:
    """A short cause for a failed connection attempt, e.g. "certificate verify failed: ..."."""
    if exc is None:
        return "cause unknown"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message or exc}".rstrip(". ")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        # What Mosquitto does to a TLS ClientHello on a plain listener.
        if tls:
            return "TLS handshake failed: connection reset (is the port a plain MQTT listener?)"
        return "connection reset by the broker"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def last_connect_error(client: mqtt.Client) -> str | None:
    """The cause of the client's latest failed connection attempt, if it had one."""
    return _LAST_FAIL.get(client)


def log_connect_fail(client: mqtt.Client, userdata: Any) -> None:
    """paho's on_connect_fail hook: say which broker is unreachable and why (paho retries).

    paho passes no exception, but paho 2.x calls this hook inside its `except OSError:` around
    `reconnect()` (both call sites in loop_forever), so `sys.exc_info()` holds the cause: the
    ssl error of a failed handshake, or the refused/timed-out socket.
    """
    exc = sys.exc_info()[1]
    tls = client in _TLS_CLIENTS
    cause = describe_connect_error(exc, tls=tls)
    _LAST_FAIL[client] = cause
    if isinstance(exc, ssl.SSLError) or (tls and isinstance(exc, ConnectionResetError)):
        reported = _TLS_REPORTED.setdefault(client, set())
        if cause not in reported:
            reported.add(cause)
            hint = ""
            if "mismatch" in cause:
                hint = " (broker.host must be a name or address in the broker's certificate)"
            elif cause.startswith("certificate verify failed"):
                hint = " (broker.tls.ca_certs must be the CA that signed the broker's certificate)"
            PAHO_LOGGER.error(
                "no TLS connection to the MQTT broker at %s:%s: %s%s",
                client.host,
                client.port,
                cause,
                hint,
            )
    PAHO_LOGGER.warning(
        "cannot connect to the MQTT broker at %s:%s (%s); retrying", client.host, client.port, cause
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


class FlushingClient(mqtt.Client):
    """A paho client whose queued packets the thread that queued them can write at once
    (`flush`), rather than only waking paho's network thread through its socket pair and
    waiting for it to run (a thread hand-off on every reply). paho's writes and these take one
    lock, so packets never interleave on the socket. Plain TCP only: an SSL socket must not be
    read on one thread while it is written on another."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Reentrant: paho writes from inside reconnect() when no network thread runs.
        self._write_lock = threading.RLock()

    def loop_write(self) -> mqtt.MQTTErrorCode:
        with self._write_lock:
            return super().loop_write()

    def reconnect(self) -> mqtt.MQTTErrorCode:
        # Swapping the socket and the packet queue under the lock: no flush can then write a
        # packet of the old connection onto the new socket ahead of its CONNECT.
        with self._write_lock:
            return super().reconnect()

    def flush(self) -> None:
        """Write what is queued, from this thread, unless paho's thread is writing or
        (re)connecting: then it writes these too, since queueing them woke it. What cannot be
        written now (no socket, a full send buffer, a broken connection) stays queued for the
        network thread, which handles the error and the reconnect as it always does."""
        if not self._write_lock.acquire(blocking=False):
            return
        try:
            self._packet_write()
        finally:
            self._write_lock.release()


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
    flushing: bool = False,
) -> mqtt.Client:
    """A configured MQTT v5 client whose connection starts with `start_client`.

    `client_id` is used unless `settings.client_id` overrides it. `manual_ack=True` leaves
    every QoS 1 PUBACK to `client.ack(mid, qos)`; combined with `receive_maximum`, the broker
    stops delivering once that many messages are unacknowledged. `flushing=True` makes a
    `FlushingClient` where the connection is plain TCP (`settings.tls` unset).
    """
    kind = FlushingClient if flushing and settings.tls is None else mqtt.Client
    client = kind(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id or client_id,
        protocol=mqtt.MQTTv5,
        userdata=userdata,
        manual_ack=manual_ack,
    )
    client.enable_logger(PAHO_LOGGER)
    client.on_socket_open = open_socket
    client.on_connect_fail = log_connect_fail
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    client.reconnect_delay_set(settings.reconnect_min_delay_s, settings.reconnect_max_delay_s)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.resolve_password())
    if settings.tls is not None:
        _configure_tls(client, settings.tls)
        _TLS_CLIENTS.add(client)
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
    (benchmark baselines, tests), where `mqtt_session.session.MqttSession` is not wanted.

    With `wait_s`, block until the broker has accepted the connection, or stop the thread and
    raise `BrokerConnectError`. Call it after setting `on_connect`: it wraps that callback.
    """
    accepted, refused = threading.Event(), threading.Event()
    callback, disconnected = client.on_connect, client.on_disconnect

    def on_connect(*args: Any) -> None:
        note_connack(client)
        if callback is not None:
            callback(*args)
        if args[3].is_failure:  # a refused login: trying again gives the same answer
            _LAST_FAIL[client] = f"the broker refused the connection: {args[3]}"
            refused.set()
        else:
            accepted.set()

    def on_disconnect(*args: Any) -> None:
        note_disconnect(client)
        if disconnected is not None:
            disconnected(*args)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.loop_start()
    if wait_s is None:
        return
    if not wait_or_give_up(accepted, client, wait_s, refused):
        client.loop_stop()
        raise BrokerConnectError(connect_failure(client, wait_s, refused.is_set()))


def connect_failure(client: mqtt.Client, wait_s: float, refused: bool = False) -> str:
    """The one line that says a client gave up connecting, with the latest attempt's cause."""
    cause = last_connect_error(client)
    if refused or hopeless(client):
        return f"no MQTT connection to the broker at {client.host}:{client.port}: {cause}"
    hint = f"last attempt: {cause}" if cause else "is it running? are the credentials right?"
    return (
        f"could not connect to the MQTT broker at {client.host}:{client.port} "
        f"within {wait_s:g} s ({hint})"
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
