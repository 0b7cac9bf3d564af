"""Per-split profile of a model on this host: bytes on the wire and device-side latency.

A `ModelProfile` lists every split k = 0..n with the bytes of the frame that split would send
under each codec (whole frame, header included: bytes on the wire decide), the cumulative head
time of blocks [0, k) on this host, and the codec times. Split 0 sends the JPEG of the prepared
image whatever the codec; split n sends nothing.

Candidates ("natural bottlenecks") are the splits whose bytes are smaller than every earlier
split's, split 0 always included, plus split n.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitting.errors import ProfileError

PROFILE_FORMAT_VERSION = 1
DEFAULT_CODECS: tuple[str, ...] = ("lossless", "fp16", "int8", "int4")
DEFAULT_DECISION_CODEC = "int8"


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


@dataclass(frozen=True)
class SplitPoint:
    """One split k: what it sends and what it costs the device.

    `shape` is the per-sample shape sent (split 0: the (S, S, 3) image; split n: ()).
    `bytes`, `encode_ms` and `decode_ms` are keyed by codec; `device_ms` is the head time of
    blocks [0, k) on the profiling host (0 for k = 0). `candidate` is with respect to the
    profile's decision codec.
    """

    k: int
    name: str
    shape: tuple[int, ...]
    bytes: dict[str, int]
    device_ms: float
    encode_ms: dict[str, float] = field(default_factory=dict)
    decode_ms: dict[str, float] = field(default_factory=dict)
    candidate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "name": self.name,
            "shape": list(self.shape),
            "bytes": dict(self.bytes),
            "device_ms": self.device_ms,
            "encode_ms": dict(self.encode_ms),
            "decode_ms": dict(self.decode_ms),
            "candidate": self.candidate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitPoint:
        try:
            return cls(
                k=int(data["k"]),
                name=str(data["name"]),
                shape=tuple(int(d) for d in data["shape"]),
                bytes={str(c): int(b) for c, b in data["bytes"].items()},
                device_ms=float(data["device_ms"]),
                encode_ms={str(c): float(v) for c, v in data.get("encode_ms", {}).items()},
                decode_ms={str(c): float(v) for c, v in data.get("decode_ms", {}).items()},
                candidate=bool(data.get("candidate", False)),
            )
        except KeyError as exc:
            raise ProfileError(f"split entry lacks key {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"malformed split entry {dict(data)!r}: {exc}") from exc


@dataclass(frozen=True)
class ModelProfile:
    """Every split of one model as measured on one host.

    `codec` is the decision codec (whose bytes mark `SplitPoint.candidate`); `input_bytes` the
    JPEG frame of split 0; `block_ms[i]` the time of block i alone; `threads` the torch threads
    used for the device-side timings (1 models "a device N times slower than one core").
    """

    model: str
    fingerprint: str
    n: int
    codec: str
    input_bytes: int
    splits: tuple[SplitPoint, ...]
    block_ms: tuple[float, ...]
    host: str
    threads: int
    jpeg_quality: int = 90
    torch_version: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        if len(self.splits) != self.n + 1:
            raise ProfileError(f"{self.model}: {len(self.splits)} splits for n={self.n} blocks")
        if [s.k for s in self.splits] != list(range(self.n + 1)):
            raise ProfileError(f"{self.model}: splits must be listed for k = 0..{self.n} in order")
        if len(self.block_ms) != self.n:
            raise ProfileError(f"{self.model}: {len(self.block_ms)} block times for n={self.n}")
        if self.codec not in self.codecs:
            raise ProfileError(f"{self.model}: decision codec {self.codec!r} not profiled")

    @property
    def codecs(self) -> tuple[str, ...]:
        """Codecs whose bytes are in the profile (those of split 1, or split 0 when n = 0)."""
        return tuple(self.splits[min(1, self.n)].bytes)

    def split(self, k: int) -> SplitPoint:
        if not 0 <= k <= self.n:
            raise ProfileError(f"{self.model}: split {k} outside 0..{self.n}")
        return self.splits[k]

    def bytes_at(self, k: int, codec: str | None = None) -> int:
        """Bytes split k sends under `codec` (default: the decision codec)."""
        codec = codec or self.codec
        point = self.split(k)
        if codec not in point.bytes:
            raise ProfileError(f"{self.model}: codec {codec!r} not profiled (have {self.codecs})")
        return point.bytes[codec]

    def device_ms_at(self, k: int) -> float:
        return self.split(k).device_ms

    def candidates(self, codec: str | None = None) -> list[int]:
        """Natural bottlenecks under `codec` (default: the decision codec), 0 and n included."""
        return natural_bottlenecks([self.bytes_at(k, codec) for k in range(self.n + 1)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PROFILE_FORMAT_VERSION,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "n": self.n,
            "codec": self.codec,
            "input_bytes": self.input_bytes,
            "candidates": self.candidates(),
            "host": self.host,
            "threads": self.threads,
            "jpeg_quality": self.jpeg_quality,
            "torch_version": self.torch_version,
            "created": self.created,
            "block_ms": list(self.block_ms),
            "splits": [s.to_dict() for s in self.splits],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelProfile:
        version = data.get("format_version", PROFILE_FORMAT_VERSION)
        if version != PROFILE_FORMAT_VERSION:
            raise ProfileError(f"profile format version {version!r} is not supported")
        try:
            splits = tuple(SplitPoint.from_dict(s) for s in data["splits"])
            block_ms = tuple(float(t) for t in data["block_ms"])
            return cls(
                model=str(data["model"]),
                fingerprint=str(data["fingerprint"]),
                n=int(data["n"]),
                codec=str(data["codec"]),
                input_bytes=int(data["input_bytes"]),
                splits=splits,
                block_ms=block_ms,
                host=str(data["host"]),
                threads=int(data["threads"]),
                jpeg_quality=int(data.get("jpeg_quality", 90)),
                torch_version=str(data.get("torch_version", "")),
                created=str(data.get("created", "")),
            )
        except KeyError as exc:
            raise ProfileError(f"profile lacks key {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"malformed profile: {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ModelProfile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ProfileError(f"profile {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ProfileError(f"profile {path} must hold a JSON object")
        return cls.from_dict(data)
