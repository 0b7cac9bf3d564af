"""Latency model: the end-to-end time of one request at each split k, from what the device knows.

For an offloaded split k < n the prediction sums the device's head(k) and encode time, the
uplink transfer of the frame (the bytes already queued ahead of it, its own bytes over the
estimated rate, and the one-way delay), the expected queue wait and the tail time at the server,
the server's decode, and the one-way delay of the reply. Split n is the whole model on the
device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from splitting.errors import ProfileError
from splitting.estimators import LinkEstimate, ServerSnapshot
from splitting.profiling import ModelProfile
from splitting.server_profile import ServerProfile
from splitting.traces import wire_bytes

#: "A device N times slower than one core of this machine": the default N.
DEFAULT_SLOWDOWN = 4.0


@dataclass(frozen=True)
class SplitCost:
    """What split k costs, apart from the link and the server's load.

    `head_ms` and `encode_ms` run on the device (already scaled by the slowdown); `decode_ms`
    runs on the server. `payload_bytes` is the frame (0 for split n).
    """

    k: int
    payload_bytes: int
    head_ms: float
    encode_ms: float
    decode_ms: float

    @property
    def device_ms(self) -> float:
        return self.head_ms + self.encode_ms


@dataclass(frozen=True)
class DeviceProfile:
    """The device's side of every split of one model, and the candidate splits."""

    model: str
    n: int
    codec: str
    costs: tuple[SplitCost, ...]
    candidates: tuple[int, ...]
    slowdown: float = 1.0

    def __post_init__(self) -> None:
        if [c.k for c in self.costs] != list(range(self.n + 1)):
            raise ProfileError(f"{self.model}: costs must be listed for k = 0..{self.n}")
        if not self.candidates or any(not 0 <= k <= self.n for k in self.candidates):
            raise ProfileError(f"{self.model}: candidates {self.candidates} outside 0..{self.n}")
        if 0 not in self.candidates or self.n not in self.candidates:
            raise ProfileError(f"{self.model}: split 0 and local ({self.n}) are always candidates")

    @property
    def local_ms(self) -> float:
        """The whole model on the device."""
        return self.costs[self.n].head_ms

    def local_tail_ms(self, k: int) -> float:
        """Blocks [k, n) on the device: the fallback when the server's result is late."""
        return max(0.0, self.local_ms - self.costs[k].head_ms)

    @classmethod
    def from_model_profile(
        cls,
        profile: ModelProfile,
        *,
        slowdown: float = DEFAULT_SLOWDOWN,
        codec: str | None = None,
        candidates: Sequence[int] | None = None,
    ) -> DeviceProfile:
        """Scale a profile measured on this host to a device `slowdown` times slower."""
        if not math.isfinite(slowdown) or slowdown <= 0:
            raise ProfileError(f"slowdown must be a positive number, got {slowdown}")
        codec = codec or profile.codec
        costs = []
        for point in profile.splits:
            k = point.k
            local = k == profile.n
            costs.append(
                SplitCost(
                    k=k,
                    payload_bytes=0 if local else profile.bytes_at(k, codec),
                    head_ms=point.device_ms * slowdown,
                    encode_ms=0.0 if local else _codec_ms(point.encode_ms, codec) * slowdown,
                    decode_ms=0.0 if local else _codec_ms(point.decode_ms, codec),
                )
            )
        chosen = tuple(candidates) if candidates is not None else tuple(profile.candidates(codec))
        return cls(
            model=profile.model,
            n=profile.n,
            codec=codec,
            costs=tuple(costs),
            candidates=tuple(sorted(set(chosen) | {0, profile.n})),
            slowdown=slowdown,
        )

    @classmethod
    def load(
        cls, path: str | Path, *, slowdown: float = DEFAULT_SLOWDOWN, codec: str | None = None
    ) -> DeviceProfile:
        """Read a `splitting.profiling.ModelProfile` JSON file and scale it."""
        return cls.from_model_profile(ModelProfile.load(path), slowdown=slowdown, codec=codec)


def _codec_ms(times: Mapping[str, float], codec: str) -> float:
    # Split 0 is a JPEG whatever the codec: a profile may key its times either way.
    if codec in times:
        return float(times[codec])
    if "jpeg" in times:
        return float(times["jpeg"])
    return 0.0


@dataclass(frozen=True)
class ServerEstimate:
    """Expected wait before our batch starts and tail time, per served split (ms)."""

    queue_ms: Mapping[int, float]
    service_ms: Mapping[int, float]

    def serves(self, k: int) -> bool:
        return k in self.service_ms

    def with_extra_wait(self, extra_ms: float) -> ServerEstimate:
        """The same estimate with `extra_ms` more expected wait at every split (never
        below no wait)."""
        if extra_ms == 0:
            return self
        return ServerEstimate(
            queue_ms={k: max(0.0, v + extra_ms) for k, v in self.queue_ms.items()},
            service_ms=self.service_ms,
        )


def estimate_server(
    snapshots: Sequence[ServerSnapshot],
    device: DeviceProfile,
    profile: ServerProfile | None,
    *,
    load_aware: bool = True,
) -> ServerEstimate | None:
    """What a request at each split can expect at the server; None when no worker is there.

    Shared subscriptions spread requests over the workers serving a split, so a split's
    estimate is the mean over those workers. A worker's queue drains in batches of its recent
    batch size, each taking the per-batch service time it reports (or the profile's tail at
    that batch size); a busy worker adds half a batch for the one in progress. Without load
    awareness the server is taken as idle: no queue, the profile's batch-1 tail time.
    """
    if not snapshots:
        return None
    queue: dict[int, list[float]] = {}
    service: dict[int, list[float]] = {}
    for snap in snapshots:
        for k in sorted(snap.splits):
            if not 0 <= k < device.n:
                continue
            wait, tail = _worker_split(snap, k, device, profile, load_aware)
            queue.setdefault(k, []).append(wait)
            service.setdefault(k, []).append(tail)
    if not service:
        return None
    return ServerEstimate(
        queue_ms={k: sum(v) / len(v) for k, v in queue.items()},
        service_ms={k: sum(v) / len(v) for k, v in service.items()},
    )


def _worker_split(
    snap: ServerSnapshot,
    k: int,
    device: DeviceProfile,
    profile: ServerProfile | None,
    load_aware: bool,
) -> tuple[float, float]:
    if not load_aware:
        idle = _profile_tail(profile, device, k, 1.0)
        return 0.0, idle if idle is not None else _guessed_tail(snap, k, device)
    batch = max(1.0, snap.batch_size)
    tail = snap.service_ms.get(k)
    if tail is None:
        tail = _profile_tail(profile, device, k, batch)
    if tail is None:
        tail = _guessed_tail(snap, k, device)
    per_batch = (
        sum(snap.service_ms.values()) / len(snap.service_ms)
        if snap.service_ms
        else _profile_tail(profile, device, 0, batch) or tail
    )
    wait = snap.queue_depth / batch * per_batch + snap.utilization * per_batch / 2
    return wait, tail


def _guessed_tail(snap: ServerSnapshot, k: int, device: DeviceProfile) -> float:
    """Tail time of split k on a worker with no profile and no service time for k.

    From a split j it does report, scaled by the blocks' relative cost on the device (blocks
    keep their relative cost across CPUs); with none reported, the device's own tail without
    its slowdown: a worker as fast as the host the device was profiled on. Not assuming the
    worker as slow as the device matters: a device that believed so would never offload, and
    so never see a service time that proves otherwise.
    """
    own = device.local_tail_ms(k)
    for j, service in sorted(snap.service_ms.items()):
        reference = device.local_tail_ms(j) if 0 <= j < device.n else 0.0
        if reference > 0:
            return service * own / reference
    return own / device.slowdown


def _profile_tail(
    profile: ServerProfile | None, device: DeviceProfile, k: int, batch: float
) -> float | None:
    if profile is None or device.model not in profile.models():
        return None
    return profile.tail_ms(device.model, k, batch)


@dataclass(frozen=True)
class Breakdown:
    """Predicted parts of one request's latency at split k (ms); total is their sum."""

    k: int
    device_ms: float
    uplink_ms: float = 0.0
    queue_ms: float = 0.0
    server_ms: float = 0.0
    downlink_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.device_ms + self.uplink_ms + self.queue_ms + self.server_ms + self.downlink_ms


def predict(
    k: int,
    device: DeviceProfile,
    link: LinkEstimate | None,
    server: ServerEstimate | None,
    *,
    device_ms: Mapping[int, float] | None = None,
) -> Breakdown:
    """Predicted latency of split k; infinite parts where the link or server rule it out.

    `device_ms` overrides the profile's head+encode time per split with measured values.
    """
    cost = device.costs[k]
    measured = (device_ms or {}).get(k)
    on_device = measured if measured is not None else cost.device_ms
    if k == device.n:
        return Breakdown(k=k, device_ms=on_device)
    if link is None or server is None or not server.serves(k):
        return Breakdown(k=k, device_ms=on_device, uplink_ms=math.inf)
    return Breakdown(
        k=k,
        device_ms=on_device,
        uplink_ms=link.transfer_s(wire_bytes(cost.payload_bytes)) * 1000,
        queue_ms=server.queue_ms[k],
        server_ms=server.service_ms[k] + cost.decode_ms,
        downlink_ms=link.rtt_s / 2 * 1000,
    )
