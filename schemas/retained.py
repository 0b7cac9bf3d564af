"""Reading a node's retained message from its own topic, the way every subscriber must.

The node's identity is the topic's (the broker's ACL can enforce it); an empty retained payload
means the node cleared it; a payload naming another node than its topic is somebody speaking for
that node and is refused like a malformed one (`MessageError`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from schemas.errors import MessageError
from schemas.messages import (
    DeviceStateMessage,
    TelemetryMessage,
    parse_device_state,
    parse_telemetry,
)
from schemas.topics import Topics

_M = TypeVar("_M")


def read_telemetry(
    topics: Topics, topic: str, payload: bytes | bytearray
) -> tuple[str, TelemetryMessage | None]:
    """(worker id, its telemetry or None when cleared); `SchemaError` when it cannot be used."""
    worker_id = topics.parse_telemetry(topic)
    return worker_id, _own(worker_id, payload, parse_telemetry, lambda t: t.worker_id)


def read_device_state(
    topics: Topics, topic: str, payload: bytes | bytearray
) -> tuple[str, DeviceStateMessage | None]:
    """(device id, its state or None when cleared); `SchemaError` when it cannot be used."""
    device_id = topics.parse_device_state(topic)
    return device_id, _own(device_id, payload, parse_device_state, lambda s: s.device_id)


def _own(
    node_id: str,
    payload: bytes | bytearray,
    parse: Callable[[bytes | bytearray], _M],
    named: Callable[[_M], str],
) -> _M | None:
    if not payload:
        return None
    message = parse(payload)
    if named(message) != node_id:
        raise MessageError(f"payload speaks for {named(message)!r}, the topic for {node_id!r}")
    return message
