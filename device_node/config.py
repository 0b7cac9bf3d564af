"""Device configuration: YAML validated into typed objects that reject unknown keys.

Every field is documented here and in `configs/device.example.yaml`. `load_device_config`
reports a bad file with its path and every bad key as a dotted path (`policy.split: ...`,
`policy.options.race_above: ...`). The models are strict (broker.config_file.STRICT_MODEL).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from broker.client import BrokerSettings
from broker.config_file import STRICT_MODEL, read_yaml_mapping, validate_config
from device_node.errors import ConfigError
from device_node.sources import SourceConfig
from schemas.codecs import CODECS, IMAGE_CODECS, INPUT_CODECS
from schemas.discovery import HomeAssistantSettings
from schemas.topics import Topics
from splitting.policy import DynamicSplit

DEFAULT_MODEL = "efficientnet-lite0"
# Codecs for an intermediate tensor (split >= 1); split 0 sends its image with an image codec.
TENSOR_CODECS = tuple(codec for codec in CODECS if codec not in IMAGE_CODECS)
CONFIG_WHAT = "device configuration"


def _tensor_codec(codec: str) -> str:
    if codec not in TENSOR_CODECS:
        raise ValueError(
            f"unknown codec {codec!r}; choose one of {', '.join(TENSOR_CODECS)} "
            "(split 0 sends its image with `input_codec`)"
        )
    return codec


# DynamicSplit's own defaults, so that DynamicOptions states each of them once.
_DYNAMIC_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(DynamicSplit.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


def _dynamic(name: str, **constraints: Any) -> Any:
    return Field(_DYNAMIC_DEFAULTS[name], **constraints)


class DynamicOptions(BaseModel):
    """`policy.options` of kind `dynamic`: the keyword options of `splitting.policy.DynamicSplit`
    (its docstring says what each does), checked here so that a bad one is reported with its
    dotted path when the file is read. Only the keys given are passed on; the rest keep
    DynamicSplit's defaults. Its `fallback` rule is built from `deadline_ms`, not set here."""

    model_config = STRICT_MODEL

    server_profile: Path | None = Field(
        None, strict=False, description="server profile JSON (tail times by batch size)"
    )
    one_way_ms: float = _dynamic("one_way_ms", ge=0, description="prior of the one-way delay")
    rate_mode: Literal["decayed", "last"] = _dynamic("rate_mode")
    half_life_s: float = _dynamic("half_life_s", gt=0, description="of the uplink estimate")
    load_aware: bool = _dynamic("load_aware")
    probe_size: int | None = _dynamic("probe_size", ge=0, description="None: split 0's frame")
    probe_quiet_s: float = _dynamic("probe_quiet_s", ge=0)
    probe_interval_s: float = _dynamic("probe_interval_s", ge=0)
    stale_after_s: float = _dynamic("stale_after_s", gt=0, description="telemetry age limit")
    hysteresis: float = _dynamic("hysteresis", ge=0, lt=1)
    offload_margin_ms: float = _dynamic("offload_margin_ms", ge=0)
    risk: float = _dynamic("risk", ge=0)
    feedback: bool = _dynamic("feedback")
    learn_bias: bool = _dynamic("learn_bias")
    bias_half_life_s: float = _dynamic("bias_half_life_s", gt=0)
    pin: int | None = _dynamic("pin", ge=0, description="always this split (still estimating)")
    race: Literal["off", "always", "auto"] = _dynamic("race")
    race_above: float = _dynamic("race_above", ge=0, le=1)


class PolicyConfig(BaseModel):
    """How the device picks its split.

    `dynamic` (the default) runs the latency-model chooser (`splitting.policy.DynamicSplit`);
    `fixed` always uses `split` (default: the model's best natural bottleneck from its profile).
    Other kinds can be registered with `device_node.policies.register_policy`; their options
    reach the factory unchecked.
    """

    model_config = STRICT_MODEL

    kind: str = Field(default="dynamic", description="dynamic, fixed, or a registered kind")
    split: int | None = Field(default=None, ge=0, description="split index for kind: fixed")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options passed to the policy's factory"
    )

    @field_validator("split")
    @classmethod
    def _split_of_the_kind(cls, split: int | None, info: ValidationInfo) -> int | None:
        if split is not None and info.data.get("kind") == "dynamic":
            raise ValueError("policy.split is only for kind 'fixed'")
        return split

    @field_validator("options")
    @classmethod
    def _options_of_the_kind(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")
        if kind == "fixed" and options:
            raise ValueError(f"policy kind 'fixed' takes no options, got {sorted(options)}")
        if kind == "dynamic":
            # A ValidationError raised here is reported under policy.options.<key>.
            checked = DynamicOptions.model_validate(options)
            return checked.model_dump(exclude_unset=True)
        return options


class ProbeConfig(BaseModel):
    """Uplink probes, sent when the policy asks for them (so a local-only device still
    measures its uplink)."""

    model_config = STRICT_MODEL

    enabled: bool = Field(default=True, description="send the probes the policy asks for")
    max_bytes: int = Field(default=64 * 1024, gt=0, description="cap on one probe's size")


class DeviceConfig(BaseModel):
    """One device node: its broker, identity, model, codec, policy, deadline and input."""

    model_config = STRICT_MODEL

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    device_id: str = Field(description="unique device name; also its result topic segment")
    topic_prefix: str = Field(default="splitmq", description="first segment of every topic")
    model: str = Field(default=DEFAULT_MODEL, description="registered model name")
    weights: str | None = Field(
        default=None, description="None = model default, 'random', a local file, or a name"
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
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    deadline_ms: float = Field(
        default=2000.0, gt=0, description="wait this long for a result, then run the tail locally"
    )
    source: SourceConfig = Field(default_factory=SourceConfig)
    rate_hz: float | None = Field(
        default=None, gt=0, description="requests per second (None: back to back)"
    )
    requests: int | None = Field(default=None, ge=0, description="stop after N (None: forever)")
    slowdown: float = Field(
        default=1.0, ge=1.0, description="stretch head/local compute by this factor (weak device)"
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
    torch_threads: int | None = Field(default=None, ge=1, description="torch threads on device")
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
            raise ValueError(f"unknown split-0 codec {codec!r}; choose {', '.join(INPUT_CODECS)}")
        return codec

    @field_validator("device_id")
    @classmethod
    def _valid_device_id(cls, device_id: str) -> str:
        Topics().result(device_id)  # schemas.topics owns the segment rules (TopicError)
        return device_id

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        Topics(prefix).result("device")
        return prefix

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


def device_config_from_mapping(data: Mapping[str, Any], *, source: str = "<dict>") -> DeviceConfig:
    """Validate a mapping (parsed YAML, or overrides merged into it) into a DeviceConfig."""
    return validate_config(DeviceConfig, data, what=CONFIG_WHAT, source=source, error=ConfigError)


def load_device_config(path: str | Path) -> DeviceConfig:
    """Read and validate a device YAML file; ConfigError names the file and the bad keys."""
    data = read_yaml_mapping(Path(path), what=CONFIG_WHAT, error=ConfigError)
    return device_config_from_mapping(data, source=str(path))


def with_overrides(config: DeviceConfig, overrides: Mapping[str, Any]) -> DeviceConfig:
    """A copy of `config` with top-level keys replaced, validated again (for CLI flags)."""
    data = config.model_dump()
    data.update({key: value for key, value in overrides.items() if value is not None})
    return device_config_from_mapping(data, source="command-line overrides")
