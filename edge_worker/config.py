"""Worker configuration: YAML validated into typed objects that reject unknown keys.

`load_worker_config` reports a bad file with its path and every bad key as a dotted path
(`models.0.splits: ...`). `splitmq config example worker` shows every key. The models are strict
(splitmq_base.configfile.STRICT): `max_batch: true` is refused, not read as 1.

Batching and bit-exactness: a batched CPU convolution or matmul may sum in a different order than
batch 1 and round differently in the last bits. `max_batch: 1` makes every tail run alone, so its
logits are bit-identical to the unsplit model's; larger batches trade that for throughput (the
top-5 classes agree in practice, the scores may differ by a few ulps).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator

from edge_worker.errors import ConfigError
from mqtt_session.client import BrokerSettings
from schemas.codecs import CODECS
from schemas.discovery import HomeAssistantSettings
from schemas.frame import MAX_DEADLINE_MS, FrameLimits
from schemas.topics import Topics, check_segment
from splitmq_base.configfile import read_yaml_mapping, validate_config
from splitmq_base.models import STRICT
from splitmq_base.validation import did_you_mean
from splitting.model_files import wire_name

DEFAULT_MODEL = "efficientnet-lite0"
SplitSelection = Literal["candidates", "all"] | list[int]
# (max_batch, max_wait_ms) per device kind, from `splitmq bench worker` (BENCHMARKS.md). CPU:
# batch 8 ran lite0's middle tails 1.2-1.6x faster than batch 1 in process, and a window buys
# nothing there (a loaded worker's queue fills the batch by itself; an idle one would only wait).
# CUDA: a batch of 64 costs about twice a batch of 1 on an H200 (../shared/profiles), so a
# larger batch and a short window pay; not measured on a GPU by this build.
BATCH_DEFAULTS: dict[str, tuple[int, float]] = {"cpu": (8, 0.0), "cuda": (32, 2.0)}
CONFIG_WHAT = "worker configuration"
# The worker's MQTT keepalive when its config gives none. The broker drops a client silent for
# 1.5 keepalives, taking a frozen (SIGSTOPped, hung) worker out of its `$share` groups and
# firing its "offline" will; devices call its telemetry stale after 3 intervals of 1 s + 1 s,
# so 2 s (3 s of silence) drops it no later. Mosquitto 2.0.11 checks keepalives only about
# every 5 s (measured: a client with keepalive 1, 2 or 3 s was dropped 5.2-5.7 s after it
# froze, one with 4 s after 11.7 s), so the bound is 1.5 keepalive + 5 s: 8 s here, against
# 50 s with the former 30 s. A shorter keepalive would buy at most 1.5 s of that and drop a
# worker whose network thread stalls briefly. It costs nothing on the wire: the telemetry
# every second keeps the connection busy, so paho rarely needs a PINGREQ.
WORKER_KEEPALIVE_S = 2


def default_worker_id() -> str:
    """`worker-<host>-<pid>`, made topic-safe."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"worker-{host or 'host'}-{os.getpid()}"


class ModelEntry(BaseModel):
    """One model this worker serves, and at which splits."""

    model_config = STRICT

    name: str = Field(
        DEFAULT_MODEL,
        description="registered model name (splitting.registry), or a model file: "
        "path/to/net.py:factory or a TorchScript file (served under the file's stem)",
    )
    weights: str | None = Field(
        None, description="None = the model's default, 'random', a local file, or a name"
    )
    splits: SplitSelection = Field(
        "all",
        description='"all" (0..n-1), "candidates" (natural bottlenecks under candidate_codec, '
        "found at start-up from a sample image), or an explicit list of split indices",
    )
    candidate_codec: str = Field(
        "int5",
        description='codec that decides "candidates" (the devices\' decision codec, '
        "splitting.profiling.DEFAULT_DECISION_CODEC)",
    )

    @field_validator("splits")
    @classmethod
    def _distinct_splits(cls, splits: SplitSelection) -> SplitSelection:
        if isinstance(splits, list):
            if not splits:
                raise ValueError("an explicit split list needs at least one split")
            if any(k < 0 for k in splits):
                raise ValueError(f"split indices are >= 0, got {splits}")
            if len(set(splits)) != len(splits):
                raise ValueError(f"split list has duplicates: {splits}")
        return splits

    @field_validator("candidate_codec")
    @classmethod
    def _known_codec(cls, codec: str) -> str:
        if codec not in CODECS:
            hint = did_you_mean(codec, CODECS)
            raise ValueError(f"unknown codec {codec!r}{hint}; choose one of {', '.join(CODECS)}")
        return codec

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        Topics().request(
            wire_name(name), 0, "device"
        )  # schemas.topics owns the segment rules (TopicError)
        return name


class FrameLimitsConfig(BaseModel):
    """What the worker's frame decoder accepts at most (schemas.frame.FrameLimits)."""

    model_config = STRICT

    max_frame_bytes: int = Field(FrameLimits.max_frame_bytes, gt=0)
    max_header_bytes: int = Field(FrameLimits.max_header_bytes, gt=0)
    max_tensor_bytes: int = Field(FrameLimits.max_tensor_bytes, gt=0)
    max_ndim: int = Field(FrameLimits.max_ndim, ge=1)

    def limits(self) -> FrameLimits:
        return FrameLimits(**self.model_dump())


class WorkerConfig(BaseModel):
    """One edge worker: broker, identity, models, device, batching, queue and telemetry."""

    model_config = STRICT

    broker: BrokerSettings = Field(
        default_factory=lambda: BrokerSettings(keepalive=WORKER_KEEPALIVE_S),
        description=f"broker connection; keepalive defaults to {WORKER_KEEPALIVE_S} s here",
    )
    worker_id: str = Field(
        default_factory=default_worker_id, description="unique worker name (telemetry/status)"
    )
    topic_prefix: str = Field("splitmq", description="first level(s) of every topic")
    share_group: str = Field(
        "splitmq-workers", description="MQTT v5 shared-subscription group of the workers"
    )
    models: list[ModelEntry] = Field(
        default_factory=lambda: [ModelEntry()], min_length=1, description="models served"
    )
    runner: Literal["model", "echo"] = Field(
        "model",
        description='"model" runs the tails; "echo" skips the model and answers a fixed top-5 '
        "(transport benchmark; frames are still decoded and validated)",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto", description='where tails run; "auto" = cuda when available, else cpu (fp32)'
    )
    backend: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description='what runs the batched tails: "torch" (PyTorch) or "onnxruntime" (the '
        "model's exported build, exported once per fingerprint into export_dir; on cuda it "
        "needs onnxruntime-gpu). "
        "Requests that ask for an exact answer always run on PyTorch",
    )
    export_dir: Path | None = Field(
        None,
        strict=False,
        description="where exported builds are kept (splitmq export); None = the cache "
        "($SPLITMQ_CACHE_DIR/onnx or ~/.cache/splitmq/onnx)",
    )
    max_batch: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="most requests in one tail call; 1 = logits bit-identical to the unsplit "
        "model (batched kernels may round differently); None = the default of the device kind "
        "the tails run on (BATCH_DEFAULTS)",
    )
    max_wait_ms: float | None = Field(
        None,
        ge=0,
        description="how long a batch waits for more requests after its first one arrived; "
        "0 = take what queued up while the previous batch ran (no added latency when idle); "
        "None = the default of the device kind (BATCH_DEFAULTS)",
    )
    queue_capacity: int = Field(
        64,
        ge=1,
        le=65535,
        description="requests held by this worker; also its MQTT ReceiveMaximum, so the broker "
        "keeps the overflow",
    )
    max_held_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description="hard bound on request bytes held; past it requests are answered "
        '"rejected" (a broker that ignores ReceiveMaximum can deliver past queue_capacity)',
    )
    max_clock_skew_ms: float | None = Field(
        1000.0,
        ge=0,
        le=MAX_DEADLINE_MS,
        description="how far a device's wall clock may lag this worker's: a request whose "
        "header `timestamps.sent` + `deadline_ms` lies more than this in the past is answered "
        '"expired" uncomputed (a frozen worker, a resend on reconnect); None = trust only the '
        "time since receipt (FORMAT.md, Deadlines)",
    )
    decode_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="threads that decode image frames (JPEG, WebP) off the compute thread, "
        "under `decode_budget_ms` (Pillow releases the GIL while it works); tensor frames "
        "decode on the compute thread",
    )
    decode_budget_ms: float = Field(
        100.0,
        ge=1,
        le=60_000,
        description="most CPU time one image frame's decoding may use: past it the request is "
        'answered "error" with code decode_timeout and its batch goes on without it (a good '
        "224x224 image decodes in about 1 ms; time spent waiting for a core is not counted)",
    )
    decode_max_wait_ms: float = Field(
        2000.0,
        ge=1,
        le=600_000,
        description="most wall time a batch waits for its frames' decoding, however busy the "
        "machine: a frame still decoding then is answered decode_timeout too",
    )
    telemetry_interval_s: float = Field(1.0, gt=0, description="periodic telemetry interval")
    telemetry_min_gap_s: float = Field(
        0.1, ge=0, description="least time between two telemetry messages (on-change rate limit)"
    )
    frame_limits: FrameLimitsConfig = Field(default_factory=FrameLimitsConfig)
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (CPU)")
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings, description="Home Assistant MQTT discovery"
    )

    @field_validator("broker", mode="before")
    @classmethod
    def _worker_keepalive(cls, broker: Any) -> Any:
        """A broker section that sets no keepalive gets the worker's (WORKER_KEEPALIVE_S)."""
        if isinstance(broker, Mapping) and "keepalive" not in broker:
            return {**broker, "keepalive": WORKER_KEEPALIVE_S}
        if isinstance(broker, BrokerSettings) and "keepalive" not in broker.model_fields_set:
            return broker.model_copy(update={"keepalive": WORKER_KEEPALIVE_S})
        return broker

    @field_validator("worker_id")
    @classmethod
    def _valid_worker_id(cls, worker_id: str) -> str:
        Topics().telemetry(worker_id)
        return worker_id

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        Topics(prefix)
        return prefix

    @field_validator("share_group")
    @classmethod
    def _valid_group(cls, group: str) -> str:
        check_segment(group, "share group")
        return group

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        names = [wire_name(entry.name) for entry in models]  # two files may share a stem
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model listed twice: {', '.join(duplicates)}")
        return models

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def batching(self, device: str) -> tuple[int, float]:
        """(max_batch, max_wait_ms) for tails on `device` ("cpu", "cuda:0"): the configured
        values, or the measured defaults of the device kind."""
        default_batch, default_wait = BATCH_DEFAULTS["cuda" if device.startswith("cuda") else "cpu"]
        return (
            self.max_batch if self.max_batch is not None else default_batch,
            self.max_wait_ms if self.max_wait_ms is not None else default_wait,
        )


def worker_config_from_mapping(data: Mapping[str, Any], *, source: str = "<dict>") -> WorkerConfig:
    """Validate a mapping (parsed YAML, or overrides merged into it) into a WorkerConfig."""
    return validate_config(WorkerConfig, data, what=CONFIG_WHAT, source=source, error=ConfigError)


def load_worker_config(path: str | Path) -> WorkerConfig:
    """Read and validate a worker YAML file; ConfigError names the file and the bad keys."""
    data = read_yaml_mapping(Path(path), what=CONFIG_WHAT, error=ConfigError)
    return worker_config_from_mapping(data, source=str(path))


def save_worker_config(config: WorkerConfig, path: str | Path) -> None:
    """Write `config` as a YAML file that `load_worker_config` reads back equal (only the
    keys that differ from the defaults; the broker password in clear, so keep the file
    private: it is meant for a worker this process starts)."""
    data = config.model_dump(mode="json", exclude_defaults=True)
    if config.broker.password is not None:
        data["broker"]["password"] = config.broker.password.get_secret_value()
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def with_overrides(config: WorkerConfig, overrides: Mapping[str, Any]) -> WorkerConfig:
    """A copy of `config` with keys replaced (None = keep), validated again (CLI flags).

    `broker` overrides may be a partial mapping: {"host": ..., "port": ...}.
    """
    data = config.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "broker" and isinstance(value, Mapping):
            data["broker"] = {**data["broker"], **{k: v for k, v in value.items() if v is not None}}
        else:
            data[key] = value
    return worker_config_from_mapping(data, source="command-line options")
