"""JSON messages of splitmq: results, telemetry, availability, device state and model catalogs.

Every message is a frozen pydantic model that forbids unknown fields and NaN/Inf. Parsing is
strict (no "3" for 3); `encode_message` and `parse_*` are the only ways bytes are made or
read. The JSON Schemas in `schemas/json/` are generated from these models
(`python -m schemas.generate`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from schemas.errors import MessageError

NonEmpty = Annotated[str, Field(min_length=1)]
# Bounds: a device must survive any message on the wire (a 400-digit queue_depth overflowed
# float conversion in the latency model). Counts fit a JSON double; times stay under 1e7 ms.
MAX_COUNT = 2**53 - 1
MAX_MILLIS = 1e7
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Millis = Annotated[float, Field(ge=0, le=MAX_MILLIS)]
SplitIndex = Annotated[int, Field(ge=0, le=MAX_COUNT)]
# Names and labels that monitoring keeps per node: bounded, so a hostile message cannot grow
# a watcher's memory without limit.
MAX_NAME = 256
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Ratio = Annotated[float, Field(ge=0, le=1)]
MAX_RATE_BPS = 1e12  # 1 Tbit/s: far above any uplink
# Upper bounds (ms) of the cumulative latency histogram a device publishes, Prometheus-style;
# the last bucket (+Inf) is implied by `count`.
LATENCY_BUCKETS_MS = (10, 25, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000)
RECENT_REQUESTS = 20
MAX_FALLBACK_REASONS = 32


class _Message(BaseModel):
    # revalidate_instances: a nested message built by model_copy (which skips validation) is
    # checked again, so no NaN score reaches the wire as null.
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, revalidate_instances="always"
    )


class Prediction(_Message):
    """One of the top classes: class index, its label and its score (softmax probability)."""

    index: Count
    label: str
    score: float


class ServerTimings(_Message):
    """Where the worker spent a request's time, in milliseconds."""

    queue_ms: Millis = Field(description="from receipt to the start of its batch")
    decode_ms: Millis = Field(description="frame validation and tensor decoding")
    compute_ms: Millis = Field(description="tail(k) for the whole batch")
    batch_size: int = Field(ge=1, description="requests in the batch this one ran in")


class ErrorInfo(_Message):
    """Why a request was not served: a stable code (e.g. a `SchemaError.code`) and a message."""

    code: NonEmpty
    message: str


# The status rules of ResultMessage, stated in its JSON Schema too for other-language clients.
_RESULT_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"status": {"const": "ok"}}},
            "then": {"properties": {"error": {"type": "null"}}},
        },
        {
            "if": {"properties": {"status": {"const": "error"}}},
            "then": {"required": ["error"], "properties": {"error": {"type": "object"}}},
        },
        {
            "if": {"properties": {"status": {"enum": ["error", "expired", "rejected"]}}},
            "then": {"properties": {"top5": {"maxItems": 0}, "exact": {"const": False}}},
        },
    ]
}


class ResultMessage(_Message):
    """A worker's reply to one request, on `<ResponseTopic>/<worker_id>`: the topic's last
    level, which a secure broker ties to the publisher's login, is who answered; `worker_id`
    must equal it (a reply whose `worker_id` differs is refused as forged)."""

    model_config = ConfigDict(json_schema_extra=_RESULT_RULES)

    v: Literal[1] = 1
    request_id: NonEmpty
    status: Literal["ok", "error", "expired", "rejected"]
    model: NonEmpty
    split: SplitIndex
    worker_id: NonEmpty = Field(
        description="the answering worker: must equal the topic's last level"
    )
    top5: list[Prediction] = Field(default_factory=list, max_length=5)
    timings: ServerTimings | None = None
    error: ErrorInfo | None = None
    exact: bool = Field(
        False,
        description="true when the scores were computed bit-exactly: the tail ran at batch 1 "
        "on one CPU thread, so its logits are bit-identical to the unsplit model's reference "
        "run on the same decoded input; false when batched, multi-threaded or on a GPU, or when "
        "not computed (absent from workers that predate the field)",
    )
    backend: Literal["torch", "onnxruntime", "echo"] | None = Field(
        None,
        description="the runtime that computed the scores: torch (PyTorch, the reference and "
        "every exact path), onnxruntime (an exported build), echo (no model); absent when not "
        "computed or from workers that predate the field",
    )

    @model_validator(mode="after")
    def _status_matches_content(self) -> ResultMessage:
        if self.status == "ok" and self.error is not None:
            raise ValueError("an ok result carries no error")
        if self.status == "error" and self.error is None:
            raise ValueError("an error result needs error {code, message}")
        if self.status != "ok" and self.top5:
            raise ValueError(f"a {self.status} result carries no predictions")
        if self.status != "ok" and self.exact:
            raise ValueError(f"a {self.status} result was not computed, so not exactly")
        if self.status != "ok" and self.backend is not None:
            raise ValueError(f"a {self.status} result was not computed by any backend")
        return self


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _split_key(value: Any) -> Any:
    """JSON object keys are strings: accept only the canonical decimal form of a split."""
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError(f"split key {value!r} is not a decimal integer like 0, 7, 12")
        return int(value)
    return value


def _split_key_schema(schema: dict[str, Any]) -> None:
    schema["additionalProperties"]["propertyNames"] = {"pattern": f"^({_DECIMAL.pattern})$"}


SplitKey = Annotated[int, Field(ge=0), BeforeValidator(_split_key)]
ServiceMs = dict[NonEmpty, dict[SplitKey, Millis]]


Total = Annotated[float, Field(ge=0, le=MAX_COUNT)]  # a cumulative sum of milliseconds


class SplitLoad(_Message):
    """One (model, split)'s load on a worker, as an inference server reports it. Cumulative
    figures count since the worker started; recent ones cover the last `interval_s`."""

    served: Count = Field(description="requests answered ok, cumulative")
    batches: Count = Field(description="tail calls run, cumulative")
    mean_batch: float = Field(
        ge=0, le=MAX_COUNT, description="requests per batch, cumulative (served / batches)"
    )
    queue_ms_total: Total = Field(
        description="sum over served requests of the time from receipt to the start of their "
        "batch, ms, cumulative"
    )
    compute_ms_total: Total = Field(description="sum of the tail calls' times, ms, cumulative")
    queue_ms_recent: Millis = Field(
        description="mean queue time of the requests served recently, ms (0 when none)"
    )
    compute_ms_recent: Millis = Field(
        description="mean time of a tail call recently (one batch), ms (0 when none)"
    )
    pending: Count = Field(description="requests of this split waiting in the queue now")
    rejected: Count = Field(description="requests answered rejected (not queued), cumulative")
    expired: Count = Field(
        description="requests skipped because their deadline or expiry passed in the queue, "
        "cumulative"
    )
    utilization: Ratio = Field(
        description="share of the recent interval the worker spent computing this split"
    )


SplitLoads = dict[NonEmpty, dict[SplitKey, SplitLoad]]


class TelemetryMessage(_Message):
    """A worker's load, retained on its telemetry topic; the device's chooser reads it."""

    v: Literal[1] = Field(1, description="message version")
    worker_id: NonEmpty = Field(description="the worker's name (also its topic's last level)")
    ts: float = Field(ge=0, description="unix seconds when the sample was taken")
    seq: Count = Field(description="increases by one per message of this worker")
    interval_s: float = Field(gt=0, description="the worker's telemetry period")
    device: NonEmpty = Field(description='where tails run: "cpu", "cuda:0", ...')
    models: dict[NonEmpty, list[SplitIndex]] = Field(description="model -> served splits")
    queue_depth: Count = Field(description="requests waiting in the queue now, every split")
    queue_capacity: Count = Field(
        description="requests the worker means to hold (its MQTT ReceiveMaximum)"
    )
    in_flight: Count = Field(description="requests in the tail call running now")
    batch_size: float = Field(ge=0, description="recent mean batch size")
    max_batch: int = Field(ge=1, description="most requests the worker puts in one tail call")
    utilization: float = Field(ge=0, le=1, description="busy fraction of recent time")
    service_ms: ServiceMs = Field(
        description="model -> split -> EWMA of per-batch tail ms (JSON keys are decimal strings)",
        json_schema_extra=_split_key_schema,
    )
    served: Count = Field(description="requests answered ok, cumulative")
    rejected: Count = Field(
        description="requests answered rejected (over the worker's bound, or while stopping), "
        "cumulative"
    )
    expired: Count = Field(
        description="requests answered expired (deadline or expiry passed in the queue; not "
        "computed), cumulative"
    )
    errors: Count = Field(description="requests answered error (bad frames, ...), cumulative")
    throughput_rps: float = Field(
        0.0, ge=0, le=MAX_COUNT, description="requests served per second, recently"
    )
    batches: Count = Field(0, description="tail calls run, cumulative, every split")
    queue_ms_total: Total = Field(
        0.0, description="sum of served requests' queue times, ms, cumulative, every split"
    )
    compute_ms_total: Total = Field(
        0.0, description="sum of tail call times, ms, cumulative, every split"
    )
    queue_ms_recent: Millis = Field(
        0.0, description="mean queue time of the requests served recently, ms, every split"
    )
    compute_ms_recent: Millis = Field(
        0.0, description="mean time of a recent tail call, ms, every split"
    )
    direct: bool = Field(
        False,
        description="the worker also takes requests on its own topic "
        "<prefix>/req/<model>/<k>/<device_id>/<worker_id> (false from workers that predate it)",
    )
    splits: SplitLoads = Field(
        default_factory=dict,
        description="model -> split -> that split's load (JSON keys are decimal strings); "
        "absent in telemetry of workers that predate it",
        json_schema_extra=_split_key_schema,
    )


class StatusMessage(_Message):
    """A node's availability, retained, with an "offline" last will."""

    v: Literal[1] = 1
    node_id: NonEmpty
    role: Literal["worker", "device"]
    state: Literal["online", "offline"]
    ts: float = Field(ge=0, description="unix seconds")


class LastResult(_Message):
    """A device's most recent request."""

    label: str = Field(max_length=MAX_NAME)
    index: Count
    score: Ratio
    split: SplitIndex
    offloaded: bool
    fallback: Name | None = None
    total_ms: Millis
    predicted_ms: Millis | None = None
    worker_id: Name | None = None


class RecentRequest(_Message):
    """One of a device's last requests: where it ran and how long it took."""

    split: SplitIndex
    offloaded: bool
    fallback: Name | None = None
    total_ms: Millis
    predicted_ms: Millis | None = None


class LatencyHistogram(_Message):
    """Cumulative end-to-end latency counts: `counts[i]` requests took <= `le_ms[i]`."""

    le_ms: list[float] = Field(max_length=len(LATENCY_BUCKETS_MS))
    counts: list[Count] = Field(max_length=len(LATENCY_BUCKETS_MS))
    count: Count
    sum_ms: float = Field(ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _cumulative(self) -> LatencyHistogram:
        if len(self.counts) != len(self.le_ms):
            raise ValueError("counts and le_ms differ in length")
        if self.le_ms != sorted(self.le_ms) or self.counts != sorted(self.counts):
            raise ValueError("buckets must ascend and counts must be cumulative")
        if self.counts and self.counts[-1] > self.count:
            raise ValueError("a bucket holds more than count")
        return self


class DeviceStateMessage(_Message):
    """A device's recent activity, retained on `<prefix>/state/<device_id>` and published at
    most every few seconds (not per request): what dashboards and Home Assistant show."""

    v: Literal[1] = 1
    device_id: Name
    ts: float = Field(ge=0, description="unix seconds when the state was taken")
    seq: Count = Field(description="increases by one per message of this device")
    model: Name
    requests: Count
    offloaded: Count
    fallbacks: Count = Field(description="requests meant for a worker that ran here instead")
    fallback_reasons: dict[Name, Count] = Field(max_length=MAX_FALLBACK_REASONS)
    bytes_sent: Count = Field(description="request bytes published since start")
    offload_ratio: Ratio = Field(description="share of requests a worker answered")
    uplink_bps: float | None = Field(
        None, ge=0, le=MAX_RATE_BPS, description="the chooser's latest uplink estimate"
    )
    last: LastResult | None = None
    recent: list[RecentRequest] = Field(max_length=RECENT_REQUESTS)
    latency: LatencyHistogram


# Bounds of a catalog: more blocks, dimensions or codecs than any real model or decoder has.
MAX_SPLITS = 1024
MAX_NDIM = 8  # schemas.codecs.DEFAULT_MAX_NDIM, the most dimensions a decoder takes
MAX_CODECS = 32
MAX_IMAGE_SIDE = 65535
MAX_RECIPE_VERSION = 65535
Dim = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class SplitSpec(_Message):
    """What a device sends at one split: the per-sample tensor and the codecs that carry it."""

    split: SplitIndex = Field(description="the split index k (also its place in `splits`)")
    shape: list[Dim] = Field(
        max_length=MAX_NDIM, description="the frame header's `shape` at this split"
    )
    dtype: Name = Field(
        description="dtype of the tensor the head produces here (uint8 at split 0, float32 "
        "after); the frame header's `dtype` is the codec's decoded dtype (FORMAT.md 5.1)"
    )
    codecs: list[Name] = Field(
        min_length=1,
        max_length=MAX_CODECS,
        description="codecs the worker decodes at this split; any other is refused",
    )


class PrepareRecipe(_Message):
    """How a device turns a photo into split 0's tensor (FORMAT.md 11.2): gray is repeated to
    three channels and alpha dropped; the shorter side is resized to `resize_to` (the other to
    `(2 * side * resize_to + shorter) // (2 * shorter)`) by the integer triangle filter of
    `recipe_version`, then the centre `size` x `size` square is cut (left = (W' - size) // 2,
    top = (H' - size) // 2). The worker normalises; the device sends raw pixels."""

    size: int = Field(ge=1, le=MAX_IMAGE_SIDE, description="S: the prepared image is S x S")
    crop_fraction: float = Field(gt=0, le=1, description="share of the resized image kept")
    recipe_version: int = Field(
        1,
        ge=1,
        le=MAX_RECIPE_VERSION,
        description="the arithmetic of the resize (FORMAT.md 11.2): 2 = the integer triangle "
        "filter any client reproduces bit for bit; 1 (absent) = Pillow's BILINEAR, reproducible "
        "only with Pillow. Send only under a version you implement",
    )
    resize_to: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGE_SIDE,
        description="R: the shorter side's length after the resize, round(size / crop_fraction) "
        "in integers (required from recipe_version 2)",
    )
    resize: Literal["shorter_side"] = Field(
        "shorter_side", description="the shorter side is scaled to resize_to"
    )
    resample: Literal["bilinear"] = Field(
        "bilinear",
        description="a triangle filter widened by the scale when shrinking (antialiased), in "
        "the arithmetic recipe_version names",
    )
    crop: Literal["center"] = "center"
    channels: Literal["RGB"] = "RGB"
    layout: Literal["HWC"] = Field("HWC", description="rows, then columns, then R, G, B")
    dtype: Literal["uint8"] = "uint8"

    @model_validator(mode="after")
    def _resize_covers_the_crop(self) -> PrepareRecipe:
        if self.recipe_version >= 2 and self.resize_to is None:
            raise ValueError(f"recipe_version {self.recipe_version} needs resize_to")
        if self.resize_to is not None and self.resize_to < self.size:
            raise ValueError(f"resize_to {self.resize_to} is smaller than size {self.size}")
        return self


class ModelCatalogMessage(_Message):
    """One model as a worker serving it decodes it, retained on
    `<prefix>/catalog/<model>/<worker_id>` (each worker republishes its own on each connect):
    enough to build a valid frame of any split from the wire alone."""

    v: Literal[1] = 1
    model: Name = Field(description="the model's name (also its topic's model level)")
    fingerprint: Name = Field(description="the frame header's `fingerprint` for this model")
    n: int = Field(ge=1, le=MAX_SPLITS, description="blocks: splits 0..n-1 are sent, n is not")
    splits: list[SplitSpec] = Field(
        max_length=MAX_SPLITS, description="one entry per split 0..n-1, in order"
    )
    prepare: PrepareRecipe = Field(description="how split 0's image is made from a photo")

    @model_validator(mode="after")
    def _splits_in_order(self) -> ModelCatalogMessage:
        if [spec.split for spec in self.splits] != list(range(self.n)):
            raise ValueError(f"splits must list 0..{self.n - 1} in order")
        size = self.prepare.size
        if self.splits[0].shape != [size, size, 3] or self.splits[0].dtype != "uint8":
            raise ValueError(f"split 0 must be uint8 [{size}, {size}, 3], as prepare says")
        return self


Message = (
    ResultMessage | TelemetryMessage | StatusMessage | DeviceStateMessage | ModelCatalogMessage
)
_M = TypeVar(
    "_M", ResultMessage, TelemetryMessage, StatusMessage, DeviceStateMessage, ModelCatalogMessage
)
_MESSAGE_TYPES = (
    ResultMessage,
    TelemetryMessage,
    StatusMessage,
    DeviceStateMessage,
    ModelCatalogMessage,
)


def encode_message(message: Message) -> bytes:
    """The message as compact UTF-8 JSON."""
    if not isinstance(message, _MESSAGE_TYPES):
        raise MessageError(f"not a splitmq message: {type(message).__name__}")
    return message.model_dump_json().encode("utf-8")


def parse_result(data: bytes | bytearray | str) -> ResultMessage:
    """Parse a result; raises `MessageError` naming the bad field."""
    return _parse(ResultMessage, data)


def parse_telemetry(data: bytes | bytearray | str) -> TelemetryMessage:
    """Parse telemetry; raises `MessageError` (an empty retained payload means "cleared":
    check for it before calling)."""
    return _parse(TelemetryMessage, data)


def parse_status(data: bytes | bytearray | str) -> StatusMessage:
    """Parse an availability message; raises `MessageError`."""
    return _parse(StatusMessage, data)


def parse_device_state(data: bytes | bytearray | str) -> DeviceStateMessage:
    """Parse a device's state; raises `MessageError` (empty retained payload: cleared)."""
    return _parse(DeviceStateMessage, data)


def parse_catalog(data: bytes | bytearray | str) -> ModelCatalogMessage:
    """Parse a model catalog; raises `MessageError` (empty retained payload: cleared)."""
    return _parse(ModelCatalogMessage, data)


def _parse(model: type[_M], data: bytes | bytearray | str) -> _M:
    try:
        return model.model_validate_json(data, strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(message)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise MessageError(f"bad {model.__name__}: {problems}") from None
