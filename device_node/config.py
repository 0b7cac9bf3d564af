"""Device configuration: YAML validated into typed objects that reject unknown keys.

Every field is documented here and in `splitmq config example device`. `load_device_config`
reports a bad file with its path and every bad key as a dotted path (`policy.split: ...`,
`policy.options.race_above: ...`). The models are strict (splitmq_base.configfile.STRICT).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator

from device_node.errors import ConfigError
from device_node.sources import SourceConfig
from mqtt_session.client import BrokerSettings
from schemas.codecs import CODECS, IMAGE_CODECS, INPUT_CODECS
from schemas.discovery import HomeAssistantSettings
from schemas.frame import DEFAULT_MAX_FRAME_BYTES
from schemas.topics import Topics
from splitmq_base.configfile import read_yaml_mapping, validate_config
from splitmq_base.models import STRICT
from splitmq_base.validation import did_you_mean
from splitting.policy import DynamicOptions

DEFAULT_MODEL = "efficientnet-lite0"
# Codecs for an intermediate tensor (split >= 1); split 0 sends its image with an image codec.
TENSOR_CODECS = tuple(codec for codec in CODECS if codec not in IMAGE_CODECS)
CONFIG_WHAT = "device configuration"


def _tensor_codec(codec: str) -> str:
    if codec not in TENSOR_CODECS:
        raise ValueError(
            f"unknown codec {codec!r}{did_you_mean(codec, TENSOR_CODECS)}; "
            f"choose one of {', '.join(TENSOR_CODECS)} "
            "(split 0 sends its image with `input_codec`)"
        )
    return codec


class DynamicPolicyOptions(DynamicOptions):
    """`policy.options` of kind `dynamic`: `splitting.policy.DynamicOptions` (its docstring
    says what each does) plus the server profile to load. Its `fallback` rule is built from
    `deadline_ms`, not set here."""

    model_config = STRICT

    server_profile: Path | None = Field(
        None, strict=False, description="server profile JSON (tail times by batch size)"
    )


class DynamicPolicyConfig(BaseModel):
    """`kind: dynamic` (the default): the latency-model chooser, `splitting.policy.DynamicSplit`."""

    model_config = STRICT

    kind: Literal["dynamic"] = "dynamic"
    split: None = Field(default=None, description="not for this kind (see `options.pin`)")
    options: DynamicPolicyOptions = Field(default_factory=DynamicPolicyOptions)

    @field_validator("split", mode="before")
    @classmethod
    def _no_split(cls, split: object) -> None:
        if split is not None:
            raise ValueError("policy.split is only for kind 'fixed'")
        return None


class FixedPolicyConfig(BaseModel):
    """`kind: fixed`: always `split` (default: the model's best natural bottleneck)."""

    model_config = STRICT

    kind: Literal["fixed"] = "fixed"
    split: int | None = Field(default=None, ge=0, description="the split index")
    options: dict[str, Any] = Field(default_factory=dict, description="none: this kind has none")

    @field_validator("options")
    @classmethod
    def _no_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        if options:
            raise ValueError(f"policy kind 'fixed' takes no options, got {sorted(options)}")
        return options


class RegisteredPolicyConfig(BaseModel):
    """Any other kind, registered with `device_node.policies.register_policy`: its factory
    gets `split` and `options` as written and checks them itself."""

    model_config = STRICT

    kind: str = Field(description="a registered policy kind")
    split: int | None = Field(default=None, ge=0, description="split index, if the kind takes one")
    options: dict[str, Any] = Field(
        default_factory=dict, description="options passed to the policy's factory"
    )


def _policy_kind(section: Any) -> str | None:
    """The union member a policy section validates into: its `kind` (dynamic when absent)."""
    kind = section.get("kind", "dynamic") if isinstance(section, Mapping) else section.kind
    if not isinstance(kind, str):
        return None
    return f"<{kind}>" if kind in ("fixed", "dynamic") else "<registered>"


#: How the device picks its split, keyed on `kind`; each kind is strict about its own keys.
#: The tags ("<fixed>") are not keys: error paths leave them out (`policy.options.race`).
PolicyConfig = Annotated[
    Annotated[DynamicPolicyConfig, Tag("<dynamic>")]
    | Annotated[FixedPolicyConfig, Tag("<fixed>")]
    | Annotated[RegisteredPolicyConfig, Tag("<registered>")],
    Discriminator(
        _policy_kind,
        custom_error_type="policy_kind",
        custom_error_message="should be a string: dynamic, fixed or a registered kind",
    ),
]


class ProbeConfig(BaseModel):
    """Uplink probes, sent when the policy asks for them (so a local-only device still
    measures its uplink)."""

    model_config = STRICT

    enabled: bool = Field(default=True, description="send the probes the policy asks for")
    max_bytes: int = Field(default=64 * 1024, gt=0, description="cap on one probe's size")


class DeviceConfig(BaseModel):
    """One device node: its broker, identity, model, codec, policy, deadline and input."""

    model_config = STRICT

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    device_id: str = Field(description="unique device name; also its result topic segment")
    topic_prefix: str = Field(default="splitmq", description="first segment of every topic")
    model: str = Field(
        default=DEFAULT_MODEL,
        description="registered model name, or a model file: path/to/net.py:factory, a "
        "TorchScript file, or a build directory written by `splitmq export`",
    )
    weights: str | None = Field(
        default=None, description="None = model default, 'random', a local file, or a name"
    )
    backend: Literal["torch", "onnxruntime"] = Field(
        default="torch",
        description='what runs the head and local runs: "torch" (PyTorch: answers are the '
        "model's own, bit for bit) or \"onnxruntime\" (the model's exported build from "
        "export_dir; a device with onnxruntime needs no torch)",
    )
    export_dir: Path | None = Field(
        default=None,
        strict=False,
        description="where exported builds are (splitmq export); None = the cache "
        "($SPLITMQ_CACHE_DIR/onnx or ~/.cache/splitmq/onnx)",
    )
    build: str | None = Field(
        default=None,
        description="the fingerprint of the build to run when export_dir holds several of the "
        "model; None = the only one",
    )
    codec: str = Field(
        default="int5", description=f"intermediate codec: {', '.join(TENSOR_CODECS)}"
    )
    codecs: tuple[str, ...] = Field(
        default=("int8", "lossless"),
        strict=False,  # a YAML list
        description="further intermediate codecs the dynamic policy may choose per request "
        "beside `codec` (only pairs of split and codec whose measured top-1 agreement with "
        "the unsplit model is at least `min_agreement`)",
    )
    input_codec: str = Field(
        default="webp",
        description="split 0's image codec: webp (lossless: the worker sees the very pixels, "
        "the answer is exact), lossless (exact, larger, cheaper to encode) or jpeg (smaller, "
        "lossy: opt-in, it changes some answers)",
    )
    min_agreement: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        description="least measured top-1 agreement with the unsplit model for a (split, "
        "codec) pair the dynamic policy may choose; exact codecs always qualify",
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality at split 0")
    zstd_level: int = Field(default=1, ge=1, le=22, description="zstd level behind the codec")
    max_frame_bytes: int = Field(
        default=DEFAULT_MAX_FRAME_BYTES,
        gt=0,
        description="the site's frame limit (the broker's and the workers'): a larger frame is "
        "never sent, its request runs here (fallback oversized)",
    )
    policy: PolicyConfig = Field(default_factory=DynamicPolicyConfig)
    deadline_ms: float = Field(
        default=2000.0,
        gt=0,
        description="the longest wait for a result before the tail runs locally (a dynamic "
        "policy waits min(this, wait_factor x predicted + wait_margin_ms) plus the device's "
        "own overrun)",
    )
    source: SourceConfig = Field(default_factory=SourceConfig)
    rate_hz: float | None = Field(
        default=None, gt=0, description="requests per second (None: back to back)"
    )
    requests: int | None = Field(default=None, ge=0, description="stop after N (None: forever)")
    slowdown: float = Field(
        default=1.0, ge=1.0, description="stretch head/local compute by this factor (weak device)"
    )
    cores: int | None = Field(
        default=None,
        ge=1,
        description="the device's CPU cores (None: this machine's); with 2 or more, a raced "
        "request runs its local tail at once while another core encodes and sends",
    )
    trace: Path | None = Field(
        default=None,
        strict=False,
        description="mahimahi uplink trace for the shaper (demo / emulation)",
    )
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    telemetry_stale_s: float | None = Field(
        default=None,
        gt=0,
        description="telemetry older than this means the worker is gone "
        "(default: 3 telemetry intervals + 1 s)",
    )
    torch_threads: int | None = Field(
        default=1,
        ge=1,
        description="intra-op threads of the device's backend (1, as the demo runs; "
        "null = torch's default, every core)",
    )
    state_interval_s: float = Field(
        default=2.0,
        ge=0.1,
        le=3600,
        description="publish the retained state (counts, last result) at most this often",
    )
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings, description="Home Assistant MQTT discovery"
    )

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, codec: str) -> str:
        return _tensor_codec(codec)

    @field_validator("codecs")
    @classmethod
    def _known_codecs(cls, codecs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_tensor_codec(codec) for codec in codecs)

    @field_validator("input_codec")
    @classmethod
    def _known_input_codec(cls, codec: str) -> str:
        if codec not in INPUT_CODECS:
            hint = did_you_mean(codec, INPUT_CODECS)
            raise ValueError(
                f"unknown split-0 codec {codec!r}{hint}; choose {', '.join(INPUT_CODECS)}"
            )
        return codec

    @field_validator("device_id")
    @classmethod
    def _valid_device_id(cls, device_id: str) -> str:
        Topics().result_inbox(device_id)  # schemas.topics owns the segment rules (TopicError)
        return device_id

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        Topics(prefix).result_inbox("device")
        return prefix

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def cpu_cores(self) -> int:
        """The device's cores: as configured, else this machine's."""
        return self.cores or os.cpu_count() or 1


def device_config_from_mapping(data: Mapping[str, Any], *, source: str = "<dict>") -> DeviceConfig:
    """Validate a mapping (parsed YAML, or overrides merged into it) into a DeviceConfig."""
    return validate_config(DeviceConfig, data, what=CONFIG_WHAT, source=source, error=ConfigError)


def load_device_config(path: str | Path) -> DeviceConfig:
    """Read and validate a device YAML file; ConfigError names the file and the bad keys."""
    data = read_yaml_mapping(Path(path), what=CONFIG_WHAT, error=ConfigError)
    return device_config_from_mapping(data, source=str(path))


def policy_override(
    policy: DynamicPolicyConfig | FixedPolicyConfig | RegisteredPolicyConfig,
    *,
    kind: str | None = None,
    split: int | None = None,
) -> dict[str, Any]:
    """The policy section after `--policy KIND` and/or `--split K` (which means kind fixed).

    A section keeps its `split` and `options` only while its kind stays the same: each kind
    is strict about its own options, so the dynamic policy's options would make a fixed one
    fail. `--policy dynamic --split K` contradicts itself and is refused.
    """
    if split is not None and kind not in (None, "fixed"):
        raise ConfigError(f"--split {split} means a fixed split; it cannot go with --policy {kind}")
    new_kind = "fixed" if split is not None else (kind or policy.kind)
    section: dict[str, Any] = policy.model_dump() if new_kind == policy.kind else {"kind": new_kind}
    if split is not None:
        section["split"] = split
    return section


def with_overrides(config: DeviceConfig, overrides: Mapping[str, Any]) -> DeviceConfig:
    """A copy of `config` with top-level keys replaced, validated again (for CLI flags)."""
    data = config.model_dump()
    data.update({key: value for key, value in overrides.items() if value is not None})
    return device_config_from_mapping(data, source="command-line overrides")
