"""MQTT topics of splitmq, built and parsed in one place (never by scattered f-strings).

| topic                                  | payload               | QoS | retained | publisher |
|----------------------------------------|-----------------------|-----|----------|-----------|
| `<prefix>/req/<model>/<k>/<did>`       | binary frame          | 1   | no       | device    |
| `<prefix>/req/<model>/<k>/<did>/<wid>` | binary frame          | 1   | no       | device    |
| `<prefix>/result/<did>/<wid>`          | JSON ResultMessage    | 1   | no       | worker    |
| `<prefix>/telemetry/<worker_id>`       | JSON TelemetryMessage | 1   | yes      | worker    |
| `<prefix>/status/<node_id>`            | JSON StatusMessage    | 1   | yes      | both      |
| `<prefix>/state/<device_id>`           | JSON DeviceStateMsg   | 1   | yes      | device    |
| `<prefix>/catalog/<model>/<wid>`       | JSON ModelCatalogMsg  | 1   | yes      | worker    |
| `<prefix>/probe/<device_id>`           | filler bytes          | 1   | no       | device    |

A request topic carries the sending device's id (`<did>`, its login on a secure broker), so
the broker can let each device publish only its own requests, and the worker answers on
`result(<did>, <wid>)`, derived from the topic, never on a ResponseTopic anyone can set (a request
whose ResponseTopic is not the device's inbox `result_inbox(<did>)` is refused unanswered).
The last level of a result topic is the answering worker's id (its login on a secure broker,
which lets a worker publish results only under its own name): a device takes a result's
worker from the topic, never from the payload. Workers subscribe to requests
through `$share/<group>/<prefix>/req/<model>/<k>/+` so several workers share one split; each
worker also subscribes (plainly) to its own `<prefix>/req/<model>/<k>/+/<worker_id>`, so a
device can send to the least loaded one. Every worker republishes, on each connect, the retained
catalog of each model it serves (fingerprint, per-split shapes, dtypes and codecs, split 0's
prepare recipe) under its own id, so a client can learn them in-band from
`<prefix>/catalog/+/+` and pick the catalog of a worker it trusts (one whose status is online).

A request that carries the MQTT v5 user property `EXACT_PROPERTY` (`splitmq-exact: 1`) asks for
the worker's bit-exact path (batch 1, one thread); a worker that does not know it ignores it.
A request that carries `PREPARE_PROPERTY` (`splitmq-prepare: <version>`) says under which
prepare recipe (FORMAT.md 11.2) its image was made; a worker of another version refuses it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, NamedTuple

from schemas.errors import TopicError

# MQTT caps a topic at 65,535 bytes of UTF-8.
MAX_TOPIC_BYTES = 65535
_FORBIDDEN = ("/", "+", "#", "\x00")
#: MQTT v5 user property (name, value) of a request that asks for the bit-exact path.
EXACT_PROPERTY = ("splitmq-exact", "1")
#: MQTT v5 user property name whose value is the request's prepare recipe version (decimal).
PREPARE_PROPERTY = "splitmq-prepare"


def check_segment(value: Any, what: str) -> str:
    """A single topic level: a non-empty string without `/ + #` or NUL, not starting with `$`
    (MQTT reserves `$` topics for the broker)."""
    if not isinstance(value, str) or not value:
        raise TopicError(f"{what} must be a non-empty string, got {value!r}")
    bad = [char for char in _FORBIDDEN if char in value]
    if bad:
        raise TopicError(f"{what} {value!r} contains {', '.join(map(repr, bad))}")
    if value.startswith("$"):
        raise TopicError(f"{what} {value!r} starts with '$', which MQTT reserves")
    return value


def check_split(k: Any) -> int:
    """A split index: a non-negative integer (not a bool)."""
    if isinstance(k, bool):
        raise TopicError(f"split must be an integer, got {k!r}")
    try:
        index = operator.index(k)
    except TypeError:
        raise TopicError(f"split must be an integer, got {k!r}") from None
    if index < 0:
        raise TopicError(f"split must be >= 0, got {index}")
    return index


class RequestTopic(NamedTuple):
    """What a request topic says: model, split, sending device, and the worker it is addressed
    to (None on the shared topic)."""

    model: str
    split: int
    device_id: str
    worker_id: str | None = None


class ResultTopic(NamedTuple):
    """What a result topic says: the device it is for and the worker that answered."""

    device_id: str
    worker_id: str


class CatalogTopic(NamedTuple):
    """What a catalog topic says: the model and the worker that published it."""

    model: str
    worker_id: str


@dataclass(frozen=True)
class Topics:
    """The topic names under one prefix (which may span several levels, e.g. "site/a/splitmq")."""

    prefix: str = "splitmq"

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise TopicError(f"topic prefix must be a non-empty string, got {self.prefix!r}")
        for level in self.prefix.split("/"):
            check_segment(level, f"level of topic prefix {self.prefix!r}:")

    # Builders -------------------------------------------------------------------------------

    def request(self, model: str, k: int, device_id: str) -> str:
        """Requests of `model` at split `k` from one device: `<prefix>/req/<model>/<k>/<did>`."""
        return self._join(*self._request_levels(model, k), check_segment(device_id, "device id"))

    def request_direct(self, model: str, k: int, device_id: str, worker_id: str) -> str:
        """Requests for one worker only: `<prefix>/req/<model>/<k>/<did>/<worker_id>` (a device
        that picks the least loaded worker sends here; the shared topic stays for the rest)."""
        return self._join(
            *self._request_levels(model, k),
            check_segment(device_id, "device id"),
            check_segment(worker_id, "worker id"),
        )

    def request_shared(self, group: str, model: str, k: int) -> str:
        """Shared subscription of a worker group to every device's requests of `model` at `k`:
        `$share/<group>/<prefix>/req/<model>/<k>/+`."""
        topic_filter = self._join(*self._request_levels(model, k), "+")
        return f"$share/{check_segment(group, 'share group')}/{topic_filter}"

    def request_direct_filter(self, model: str, k: int, worker_id: str) -> str:
        """A worker's own requests from every device: `<prefix>/req/<model>/<k>/+/<worker_id>`."""
        return self._join(
            *self._request_levels(model, k), "+", check_segment(worker_id, "worker id")
        )

    # Filters over every model and split, for access control (each client's own topics).

    def requests_all(self) -> str:
        """Filter for every request, shared and direct: `<prefix>/req/#`."""
        return self._join("req", "#")

    def requests_from(self, device_id: str) -> str:
        """Filter for one device's shared requests: `<prefix>/req/+/+/<did>`."""
        return self._join("req", "+", "+", check_segment(device_id, "device id"))

    def direct_requests_from(self, device_id: str) -> str:
        """Filter for one device's direct requests to any worker: `<prefix>/req/+/+/<did>/+`."""
        return self._join("req", "+", "+", check_segment(device_id, "device id"), "+")

    def requests_shared_all(self, group: str) -> str:
        """A worker group's shared subscription to every model and split:
        `$share/<group>/<prefix>/req/+/+/+`."""
        return f"$share/{check_segment(group, 'share group')}/{self._join('req', '+', '+', '+')}"

    def direct_requests_to(self, worker_id: str) -> str:
        """Filter for one worker's direct requests, every model, split and device:
        `<prefix>/req/+/+/+/<worker_id>`."""
        return self._join("req", "+", "+", "+", check_segment(worker_id, "worker id"))

    def everything(self) -> str:
        """Filter for every topic under the prefix: `<prefix>/#`."""
        return self._join("#")

    def result(self, device_id: str, worker_id: str) -> str:
        """A worker's results for one device: `<prefix>/result/<device_id>/<worker_id>` (the
        worker level is what a secure broker checks against the publisher's login)."""
        return self._join(
            "result", check_segment(device_id, "device id"), check_segment(worker_id, "worker id")
        )

    def result_inbox(self, device_id: str) -> str:
        """A device's MQTT v5 ResponseTopic, the stem of its results: `<prefix>/result/<did>`
        (each worker answers one level below it, on `result(device_id, worker_id)`)."""
        return self._join("result", check_segment(device_id, "device id"))

    def results_for(self, device_id: str) -> str:
        """Filter for one device's results from every worker: `<prefix>/result/<did>/+`."""
        return self._join("result", check_segment(device_id, "device id"), "+")

    def results_from(self, worker_id: str) -> str:
        """Filter for one worker's results to every device: `<prefix>/result/+/<wid>`."""
        return self._join("result", "+", check_segment(worker_id, "worker id"))

    def result_all(self) -> str:
        """Filter for every result: `<prefix>/result/+/+`."""
        return self._join("result", "+", "+")

    def telemetry(self, worker_id: str) -> str:
        """A worker's retained telemetry: `<prefix>/telemetry/<worker_id>`."""
        return self._join("telemetry", check_segment(worker_id, "worker id"))

    def telemetry_all(self) -> str:
        """Filter for every worker's telemetry: `<prefix>/telemetry/+`."""
        return self._join("telemetry", "+")

    def status(self, node_id: str) -> str:
        """A node's retained availability (with a last will): `<prefix>/status/<node_id>`."""
        return self._join("status", check_segment(node_id, "node id"))

    def status_all(self) -> str:
        """Filter for every node's availability: `<prefix>/status/+`."""
        return self._join("status", "+")

    def device_state(self, device_id: str) -> str:
        """A device's retained recent activity (rate-limited): `<prefix>/state/<device_id>`."""
        return self._join("state", check_segment(device_id, "device id"))

    def device_state_all(self) -> str:
        """Filter for every device's state: `<prefix>/state/+`."""
        return self._join("state", "+")

    def catalog(self, model: str, worker_id: str) -> str:
        """A model's retained catalog as one worker publishes it (shapes, codecs, fingerprint):
        `<prefix>/catalog/<model>/<worker_id>`."""
        return self._join(
            "catalog", check_segment(model, "model"), check_segment(worker_id, "worker id")
        )

    def catalogs_of(self, model: str) -> str:
        """Filter for every worker's catalog of one model: `<prefix>/catalog/<model>/+`."""
        return self._join("catalog", check_segment(model, "model"), "+")

    def catalogs_from(self, worker_id: str) -> str:
        """Filter for one worker's catalogs: `<prefix>/catalog/+/<worker_id>`."""
        return self._join("catalog", "+", check_segment(worker_id, "worker id"))

    def catalog_all(self) -> str:
        """Filter for every catalog: `<prefix>/catalog/+/+`."""
        return self._join("catalog", "+", "+")

    def probe(self, device_id: str) -> str:
        """Uplink probes (bandwidth measurement, nobody subscribes): `<prefix>/probe/<id>`."""
        return self._join("probe", check_segment(device_id, "device id"))

    # Parsers --------------------------------------------------------------------------------

    def parse_request(self, topic: str) -> RequestTopic:
        """`<prefix>/req/<model>/<k>/<did>` or `<prefix>/req/<model>/<k>/<did>/<worker_id>` ->
        RequestTopic(model, k, device_id, worker_id or None)."""
        levels = self._levels_after(topic, "req", (3, 4))
        model, k, device_id = levels[:3]
        if not k.isdigit() or not k.isascii() or str(int(k)) != k:
            raise TopicError(f"topic {topic!r}: split {k!r} is not a canonical integer")
        worker_id = check_segment(levels[3], "worker id") if len(levels) == 4 else None
        return RequestTopic(
            check_segment(model, "model"), int(k), check_segment(device_id, "device id"), worker_id
        )

    def parse_result(self, topic: str) -> ResultTopic:
        """`<prefix>/result/<device_id>/<worker_id>` -> ResultTopic(device_id, worker_id)."""
        device_id, worker_id = self._levels_after(topic, "result", 2)
        return ResultTopic(
            check_segment(device_id, "device id"), check_segment(worker_id, "worker id")
        )

    def parse_telemetry(self, topic: str) -> str:
        """`<prefix>/telemetry/<worker_id>` -> worker_id."""
        return check_segment(self._levels_after(topic, "telemetry", 1)[0], "worker id")

    def parse_status(self, topic: str) -> str:
        """`<prefix>/status/<node_id>` -> node_id."""
        return check_segment(self._levels_after(topic, "status", 1)[0], "node id")

    def parse_device_state(self, topic: str) -> str:
        """`<prefix>/state/<device_id>` -> device_id."""
        return check_segment(self._levels_after(topic, "state", 1)[0], "device id")

    def parse_catalog(self, topic: str) -> CatalogTopic:
        """`<prefix>/catalog/<model>/<worker_id>` -> CatalogTopic(model, worker_id)."""
        model, worker_id = self._levels_after(topic, "catalog", 2)
        return CatalogTopic(check_segment(model, "model"), check_segment(worker_id, "worker id"))

    # Helpers --------------------------------------------------------------------------------

    def _join(self, *levels: str) -> str:
        topic = "/".join((self.prefix, *levels))
        if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
            raise TopicError(f"topic is longer than MQTT's {MAX_TOPIC_BYTES} bytes")
        return topic

    def _request_levels(self, model: str, k: int) -> tuple[str, str, str]:
        return "req", check_segment(model, "model"), str(check_split(k))

    def _levels_after(self, topic: str, kind: str, count: int | tuple[int, ...]) -> list[str]:
        if not isinstance(topic, str):
            raise TopicError(f"topic must be a string, got {topic!r}")
        head = f"{self.prefix}/{kind}/"
        if not topic.startswith(head):
            raise TopicError(f"topic {topic!r} does not start with {head!r}")
        levels = topic[len(head) :].split("/")
        counts = (count,) if isinstance(count, int) else count
        if len(levels) not in counts:
            wanted = " or ".join(map(str, counts))
            raise TopicError(f"topic {topic!r} needs {wanted} level(s) after {head!r}")
        return levels
