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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.codecs import EXACT_CODECS
from splitting.errors import ProfileError
from splitting.estimators import LinkEstimate, ServerSnapshot
from splitting.profiles import ModelProfile, natural_bottlenecks
from splitting.server_profile import ServerProfile
from splitting.traces import wire_bytes

#: "A device N times slower than one core of this machine": the default N.
DEFAULT_SLOWDOWN = 4.0


#: The least top-1 agreement with the unsplit model a (split, codec) pair needs to be chosen.
DEFAULT_MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class SplitCost:
    """What split k costs under one codec, apart from the link and the server's load.

    `head_ms` and `encode_ms` run on the device (already scaled by the slowdown); `decode_ms`
    runs on the server. `payload_bytes` is the frame (0 for split n). `agreement` is the
    measured top-1 agreement with the unsplit model (None: not measured).
    """

    k: int
    payload_bytes: int
    head_ms: float
    encode_ms: float
    decode_ms: float
    codec: str = ""
    agreement: float | None = None

    @property
    def device_ms(self) -> float:
        return self.head_ms + self.encode_ms


@dataclass(frozen=True)
class DeviceProfile:
    """The device's side of every split of one model, and the candidate splits.

    `costs[k]` is split k under its smallest admissible codec (the decision codec where none
    is admissible); `options[k]` every admissible (split k, codec) pair, among which the chooser
    picks per request. A pair is admissible when its codec is exact or its measured agreement
    is at least `min_agreement`. Candidates are natural bottlenecks among admissible splits.
    """

    model: str
    n: int
    codec: str
    costs: tuple[SplitCost, ...]
    candidates: tuple[int, ...]
    slowdown: float = 1.0
    options: Mapping[int, tuple[SplitCost, ...]] = field(default_factory=dict)
    min_agreement: float = 0.0
    #: CPU cores: with two or more, a raced request runs its local tail on one while another
    #: encodes and sends the head's output, so a lost race costs no encode.
    cores: int = 1

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ProfileError(f"{self.model}: a device has at least one core, got {self.cores}")
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

    def options_at(self, k: int) -> tuple[SplitCost, ...]:
        """The (split k, codec) pairs the chooser may take at k (none: below the floor)."""
        if k in self.options:
            return self.options[k]
        return (self.costs[k],)

    def admissible_codecs(self) -> dict[int, tuple[str | None, ...]]:
        """Every split with at least one admissible codec, with those codecs."""
        found: dict[int, tuple[str | None, ...]] = {}
        for k in range(self.n + 1):
            codecs = tuple(c.codec or None for c in self.options_at(k))
            if codecs:
                found[k] = codecs
        return found

    def admissible_pairs(self) -> list[tuple[int, str | None]]:
        return [(k, c) for k, codecs in self.admissible_codecs().items() for c in codecs]

    def cost(self, k: int, codec: str | None = None) -> SplitCost:
        """Split k under `codec` (None or unknown: `costs[k]`)."""
        for option in self.options_at(k):
            if option.codec == codec:
                return option
        return self.costs[k]

    @classmethod
    def from_model_profile(
        cls,
        profile: ModelProfile,
        *,
        slowdown: float = DEFAULT_SLOWDOWN,
        codec: str | None = None,
        candidates: Sequence[int] | None = None,
        codecs: Sequence[str] | None = None,
        min_agreement: float = 0.0,
        cores: int = 1,
    ) -> DeviceProfile:
        """Scale a profile measured on this host to a device `slowdown` times slower.

        `codec` is the decision codec; `codecs` the codecs the device may send (default: that
        one; split 0 uses the profile's image codec unless `codecs` names another image codec).
        """
        if not math.isfinite(slowdown) or slowdown <= 0:
            raise ProfileError(f"slowdown must be a positive number, got {slowdown}")
        if not 0 <= min_agreement <= 1:
            raise ProfileError(f"min_agreement must be in [0, 1], got {min_agreement}")
        codec = codec or profile.codec
        allowed = list(dict.fromkeys([codec, *(codecs or ())]))
        costs: list[SplitCost] = []
        options: dict[int, tuple[SplitCost, ...]] = {}
        for point in profile.splits:
            pairs = _pairs(profile, point.k, allowed, slowdown)
            admissible = tuple(p for p in pairs if _admissible(p, min_agreement))
            if point.k < profile.n:
                options[point.k] = admissible
            fewest = min(admissible, key=lambda p: (p.payload_bytes, p.encode_ms), default=None)
            costs.append(fewest or pairs[0])
        if candidates is not None:
            chosen = tuple(candidates)
        else:
            sizes = [c.payload_bytes if options.get(c.k, True) else math.inf for c in costs]
            chosen = tuple(natural_bottlenecks(sizes))  # type: ignore[arg-type]
        return cls(
            model=profile.model,
            n=profile.n,
            codec=codec,
            costs=tuple(costs),
            candidates=tuple(sorted(set(chosen) | {0, profile.n})),
            slowdown=slowdown,
            options=options,
            min_agreement=min_agreement,
            cores=cores,
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        slowdown: float = DEFAULT_SLOWDOWN,
        codec: str | None = None,
        **options: Any,
    ) -> DeviceProfile:
        """Read a `splitting.profiling.ModelProfile` JSON file and scale it."""
        profile = ModelProfile.load(path)
        return cls.from_model_profile(profile, slowdown=slowdown, codec=codec, **options)


def _pairs(
    profile: ModelProfile, k: int, codecs: Sequence[str], slowdown: float
) -> list[SplitCost]:
    """Split k under each of `codecs` the profile measured (split 0: under image codecs)."""
    point = profile.split(k)
    if k == profile.n:
        return [SplitCost(k, 0, point.device_ms * slowdown, 0.0, 0.0, "", 1.0)]
    wanted = list(dict.fromkeys(profile.codec_at(k, c) for c in codecs))
    return [
        SplitCost(
            k=k,
            payload_bytes=point.bytes[c],
            head_ms=point.device_ms * slowdown,
            encode_ms=point.encode_ms.get(c, 0.0) * slowdown,
            decode_ms=point.decode_ms.get(c, 0.0),
            codec=c,
            agreement=1.0 if c in EXACT_CODECS else point.agreement.get(c),
        )
        for c in wanted
        if c in point.bytes
    ]


def _admissible(cost: SplitCost, min_agreement: float) -> bool:
    if min_agreement <= 0:
        return True
    return cost.agreement is not None and cost.agreement >= min_agreement


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
    estimate is the mean over those workers; where two or more of them take requests on their
    own topic, the device sends to the least loaded one, so the estimate is that worker's. A
    worker's queue drains in batches of its recent batch size, each taking the per-batch
    service time it reports (or the profile's tail at that batch size); a busy worker adds half
    a batch for the one in progress. Without load
    awareness the server is taken as idle: no queue, the profile's batch-1 tail time.
    """
    if not snapshots:
        return None
    per_split: dict[int, list[tuple[float, float, bool]]] = {}
    for snap in snapshots:
        for k in sorted(snap.splits):
            if not 0 <= k < device.n:
                continue
            wait, tail = _worker_split(snap, k, device, profile, load_aware)
            per_split.setdefault(k, []).append((wait, tail, snap.direct))
    if not per_split:
        return None
    queue, service = {}, {}
    for k, workers in per_split.items():
        direct = [(wait, tail) for wait, tail, is_direct in workers if is_direct]
        if len(direct) >= 2:
            queue[k], service[k] = min(direct, key=lambda w: w[0] + w[1])
        else:
            queue[k] = sum(w[0] for w in workers) / len(workers)
            service[k] = sum(w[1] for w in workers) / len(workers)
    return ServerEstimate(queue_ms=queue, service_ms=service)


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
    codec: str = ""

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
    cost: SplitCost | None = None,
) -> Breakdown:
    """Predicted latency of split k (under `cost`'s codec, default `device.costs[k]`); infinite
    parts where the link or server rule it out.

    `device_ms` overrides the profile's head+encode time per split with measured values.
    """
    cost = cost or device.costs[k]
    measured = (device_ms or {}).get(k)
    on_device = measured if measured is not None else cost.device_ms
    if k == device.n:
        return Breakdown(k=k, device_ms=on_device)
    if link is None or server is None or not server.serves(k):
        return Breakdown(k=k, device_ms=on_device, uplink_ms=math.inf, codec=cost.codec)
    return Breakdown(
        k=k,
        codec=cost.codec,
        device_ms=on_device,
        uplink_ms=link.transfer_s(wire_bytes(cost.payload_bytes)) * 1000,
        queue_ms=server.queue_ms[k],
        server_ms=server.service_ms[k] + cost.decode_ms,
        downlink_ms=link.rtt_s / 2 * 1000,
    )
