"""A model's profile: every split's bytes on the wire, device time and answer agreement.

A `ModelProfile` lists every split k = 0..n with the bytes of the frame that split would send
under each codec (whole frame, header included: bytes on the wire decide), the cumulative head
time of blocks [0, k) on the host that measured it, the codec times, and the top-1 agreement of
the answer computed from the decoded tensor with the unsplit model's. Split 0 sends the prepared
image under an image codec (lossless WebP by default, so the answer is exact; JPEG is opt-in);
split n sends nothing. `backend` names the runtime the device times and agreement were measured
on (torch or onnxruntime).

Candidates ("natural bottlenecks") are the splits whose bytes are smaller than every earlier
split's, split 0 always included, plus split n. This module holds the data only; measuring is
`splitting.profiling`. It imports no torch, so a device without torch reads profiles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, model_validator

from schemas.codecs import INPUT_CODECS as _INPUT_CODECS
from splitmq_base.models import STRICT
from splitting.errors import ProfileError
from splitting.jsonfile import read_json_object, validate_json_data

PROFILE_FORMAT_VERSION = 2
DEFAULT_CODECS: tuple[str, ...] = ("lossless", "fp16", "int8", "int5", "int4")
DEFAULT_DECISION_CODEC = "int5"
DEFAULT_JPEG_QUALITY = 90
#: Split 0's encodings of the uint8 image (every profile measures them all), and the default.
INPUT_CODECS: tuple[str, ...] = _INPUT_CODECS
DEFAULT_INPUT_CODEC = "webp"


def natural_bottlenecks(bytes_by_k: Sequence[int]) -> list[int]:
    """Splits worth offering: 0, every k that sends fewer bytes than all earlier splits, and n.

    `bytes_by_k[k]` is the number of bytes split k sends (index 0 the input, index n nothing).
    """
    if not bytes_by_k:
        raise ProfileError("natural_bottlenecks needs the bytes of at least one split")
    last = len(bytes_by_k) - 1
    chosen = [0]
    smallest = bytes_by_k[0]
    for k in range(1, last):
        if bytes_by_k[k] < smallest:
            chosen.append(k)
            smallest = bytes_by_k[k]
    if last > 0:
        chosen.append(last)
    return chosen


class SplitPoint(BaseModel):
    """One split k: what it sends and what it costs the device.

    `shape` is the per-sample shape sent (split 0: the (S, S, 3) image; split n: ()).
    `bytes`, `encode_ms` and `decode_ms` are keyed by codec; `device_ms` is the head time of
    blocks [0, k) on the profiling host (0 for k = 0). `candidate` is with respect to the
    profile's decision codec. `agreement[codec]` is the share of the profile's images whose
    top-1 class from the decoded tensor equals the unsplit model's (split 0: keyed by image
    codec; absent when not measured).
    """

    model_config = STRICT

    k: int
    name: str
    shape: tuple[int, ...]
    bytes: dict[str, int]
    device_ms: float
    encode_ms: dict[str, float] = Field(default_factory=dict)
    decode_ms: dict[str, float] = Field(default_factory=dict)
    candidate: bool = False
    agreement: dict[str, float] = Field(default_factory=dict)

    def replace(self, **changes: Any) -> SplitPoint:
        """A copy with `changes`, validated like any other split."""
        return _replaced(self, changes)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitPoint:
        return validate_json_data(cls, dict(data), what="split entry")


class ModelProfile(BaseModel):
    """Every split of one model as measured on one host.

    `codec` is the decision codec (whose bytes mark `SplitPoint.candidate`); `input_bytes` the
    frame of split 0; `block_ms[i]` the time of block i alone; `threads` the threads of the
    device-side timings (1 models "a device N times slower than one core"); `backend` and
    `backend_version` the runtime they ran on (files older than the field: torch).
    The fields are declared in the order of the JSON file (format version 2).
    """

    model_config = STRICT

    model: str
    fingerprint: str
    n: int
    codec: str
    input_bytes: int
    host: str
    threads: int
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    torch_version: str = ""
    created: str = ""
    backend: str = "torch"
    backend_version: str = ""
    input_codec: str = DEFAULT_INPUT_CODEC
    images: int = 0
    block_ms: tuple[float, ...]
    splits: tuple[SplitPoint, ...]

    @model_validator(mode="after")
    def _consistent(self) -> ModelProfile:
        if len(self.splits) != self.n + 1:
            raise ProfileError(f"{self.model}: {len(self.splits)} splits for n={self.n} blocks")
        if [s.k for s in self.splits] != list(range(self.n + 1)):
            raise ProfileError(f"{self.model}: splits must be listed for k = 0..{self.n} in order")
        if len(self.block_ms) != self.n:
            raise ProfileError(f"{self.model}: {len(self.block_ms)} block times for n={self.n}")
        if self.codec not in self.codecs:
            raise ProfileError(f"{self.model}: decision codec {self.codec!r} not profiled")
        return self

    @property
    def codecs(self) -> tuple[str, ...]:
        """Codecs whose bytes are in the profile (those of split 1, or split 0 when n = 0)."""
        return tuple(self.splits[min(1, self.n)].bytes)

    def split(self, k: int) -> SplitPoint:
        if not 0 <= k <= self.n:
            raise ProfileError(f"{self.model}: split {k} outside 0..{self.n}")
        return self.splits[k]

    def codec_at(self, k: int, codec: str | None = None) -> str:
        """The codec split k uses when the device sends tensors with `codec`: split 0 sends
        the image with an image codec (`codec` itself if it is one, else the profile's)."""
        codec = codec or self.codec
        if k == 0 and codec not in self.splits[0].bytes:
            return self.input_codec
        return codec

    def bytes_at(self, k: int, codec: str | None = None) -> int:
        """Bytes split k sends under `codec` (default: the decision codec)."""
        point = self.split(k)
        codec = self.codec_at(k, codec)
        if codec not in point.bytes:
            raise ProfileError(f"{self.model}: codec {codec!r} not profiled (have {self.codecs})")
        return point.bytes[codec]

    def agreement_at(self, k: int, codec: str | None = None) -> float | None:
        """Measured top-1 agreement of split k under `codec`; None when not measured."""
        return self.split(k).agreement.get(self.codec_at(k, codec))

    def device_ms_at(self, k: int) -> float:
        return self.split(k).device_ms

    def candidates(self, codec: str | None = None) -> list[int]:
        """Natural bottlenecks under `codec` (default: the decision codec), 0 and n included."""
        return natural_bottlenecks([self.bytes_at(k, codec) for k in range(self.n + 1)])

    def with_codec(self, codec: str, input_codec: str | None = None) -> ModelProfile:
        """The same measurements with another decision codec and split-0 codec (candidate
        marks recomputed)."""
        changed = self.replace(codec=codec, input_codec=input_codec or self.input_codec)
        chosen = set(changed.candidates(codec))
        splits = tuple(s.replace(candidate=s.k in chosen) for s in self.splits)
        return changed.replace(splits=splits, input_bytes=changed.bytes_at(0))

    def replace(self, **changes: Any) -> ModelProfile:
        """A copy with `changes`, validated (and checked for consistency) like a new one."""
        return _replaced(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (format version 2); `candidates` is derived, written for readers."""
        data = self.model_dump(mode="json")
        ordered: dict[str, Any] = {"format_version": PROFILE_FORMAT_VERSION}
        for key, value in data.items():
            ordered[key] = value
            if key == "input_bytes":
                ordered["candidates"] = self.candidates()
        return ordered

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "profile") -> ModelProfile:
        """A profile from its JSON form; ProfileError names each bad key."""
        fields = dict(data)
        version = fields.pop("format_version", PROFILE_FORMAT_VERSION)
        if version != PROFILE_FORMAT_VERSION or isinstance(version, bool):
            raise ProfileError(f"{source}: profile format version {version!r} is not supported")
        fields.pop("candidates", None)  # derived from the bytes; recomputed, never trusted
        return validate_json_data(cls, fields, what=source)

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ModelProfile:
        return cls.from_dict(read_json_object(Path(path), "profile"), source=f"profile {path}")


Model = TypeVar("Model", bound=BaseModel)


def _replaced(model: Model, changes: Mapping[str, Any]) -> Model:
    fields = {name: getattr(model, name) for name in type(model).model_fields}
    return type(model).model_validate({**fields, **changes})
