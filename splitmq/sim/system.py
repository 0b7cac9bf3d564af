"""The simulated system: a device (one CPU, one uplink) and an edge server under load.

One request at split k < n: the device runs head(k) and encodes on its CPU, hands the frame to
the uplink (`splitting.traces.Uplink`: the trace's delivery opportunities, FIFO, one-way delay),
the server waits out its queue and runs the tail in a batch (server profile at the background
batch size), and the result comes back after the one-way delay. If the result is not back by
the request's deadline, the device runs tail(k) itself and the late result is dropped, as the
live device node does. Split n runs the whole model on the device.

The device CPU serializes everything it runs. Heads start in arrival order; a fallback tail
reserves the CPU from its deadline on, so a request's outcome is fixed when it starts and the
oracle can try every split from the same state (`DeviceState.copy`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from schemas.messages import TelemetryMessage
from splitmq.sim.scenarios import ServerLoad
from splitting.latency import DeviceProfile
from splitting.server_profile import ServerProfile
from splitting.traces import Delivery, Uplink, wire_bytes

#: The simulated worker holds this many requests (its MQTT ReceiveMaximum): enough that its
#: telemetry shows the whole backlog of the heavy scenario rather than a broker-side overflow.
WORKER_QUEUE_CAPACITY = 4096


class DeviceCpu:
    """Busy intervals of the device's single CPU; jobs placed in the earliest gap that fits."""

    def __init__(self) -> None:
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._head_floor = 0.0  # heads start in arrival order

    def copy(self) -> DeviceCpu:
        clone = DeviceCpu()
        clone._starts = list(self._starts)
        clone._ends = list(self._ends)
        clone._head_floor = self._head_floor
        return clone

    def forget_before(self, t: float) -> None:
        """Drop intervals that ended before t (no later job can be ready before t)."""
        drop = 0
        while drop < len(self._ends) and self._ends[drop] <= t and self._starts[drop] <= t:
            drop += 1
        if drop:
            del self._starts[:drop]
            del self._ends[:drop]

    def run_head(self, ready: float, duration: float) -> tuple[float, float]:
        start, end = self.reserve(max(ready, self._head_floor), duration)
        self._head_floor = start
        return start, end

    def reserve(self, ready: float, duration: float) -> tuple[float, float]:
        start = self.earliest(ready, duration)
        self._insert(start, start + duration)
        return start, start + duration

    def reserve_until(self, ready: float, duration: float, cancel_s: float) -> tuple[float, float]:
        """Like `reserve`, but the job is cancelled at `cancel_s` if still running then (a
        raced tail whose server result came first): it holds the CPU only until then."""
        start = self.earliest(ready, duration)
        end = min(start + duration, max(start, cancel_s))
        if end > start:
            self._insert(start, end)
        return start, end

    def earliest(self, ready: float, duration: float) -> float:
        """Start of the earliest gap from `ready` on that fits `duration`."""
        start = ready
        i = bisect.bisect_right(self._ends, start)  # intervals ending after `start`
        while i < len(self._starts):
            if self._starts[i] >= start + duration:
                break
            start = max(start, self._ends[i])
            i += 1
        return start

    def _insert(self, start: float, end: float) -> None:
        position = bisect.bisect_left(self._starts, start)
        self._starts.insert(position, start)
        self._ends.insert(position, end)


class EdgeServer:
    """The worker under a load scenario; exogenous (one device does not change its load)."""

    def __init__(
        self,
        load: ServerLoad,
        profile: ServerProfile,
        device: DeviceProfile,
        *,
        dtype: str = "fp32",
    ) -> None:
        self.load = load
        self.profile = profile
        self.device = device
        self.model = device.model
        self.dtype = dtype
        if profile.blocks(self.model) != device.n:
            raise ValueError(
                f"server profile has {profile.blocks(self.model)} blocks for {self.model}, "
                f"device profile {device.n}"
            )
        n = device.n
        # Per-batch tail times by background batch size, computed once (the hot path).
        self._batch_ms: dict[int, list[float]] = {}
        for b in {max(1, int(x)) for x in load.batch}:
            self._batch_ms[b] = [profile.tail_ms(self.model, k, b, dtype) for k in range(n + 1)]

    def _tails(self, batch: int) -> list[float]:
        tails = self._batch_ms.get(batch)
        if tails is None:
            tails = [
                self.profile.tail_ms(self.model, k, batch, self.dtype)
                for k in range(self.device.n + 1)
            ]
            self._batch_ms[batch] = tails
        return tails

    def wait_ms(self, arrive_s: float) -> tuple[float, int]:
        """Queue wait of a request arriving now, and the batch size it will run in."""
        batch, queue = self.load.at(arrive_s)
        if batch <= 0:
            return 0.0, 1
        per_batch = self._tails(batch)[0]
        in_progress = per_batch - math.fmod(arrive_s * 1000, per_batch)
        return in_progress + math.ceil(queue / batch) * per_batch, batch

    def done_s(self, k: int, arrive_s: float) -> float:
        """When the result of a split-k request reaching the worker at `arrive_s` is sent."""
        wait, batch = self.wait_ms(arrive_s)
        tail = self._tails(batch)[k]
        return arrive_s + (wait + self.device.costs[k].decode_ms + tail) / 1000

    def telemetry(
        self, t_s: float, seq: int, *, interval_s: float, worker_id: str
    ) -> TelemetryMessage:
        """What the worker publishes at `t_s`: its queue, batch size and service time now."""
        batch, queue = self.load.at(t_s)
        busy = batch > 0
        tails = self._tails(max(1, batch))
        service = {0: tails[0]} if busy else {}
        return TelemetryMessage(
            worker_id=worker_id,
            ts=t_s,
            seq=seq,
            interval_s=interval_s,
            device=self.profile.device,
            models={self.model: list(range(self.device.n))},
            queue_depth=queue,
            queue_capacity=max(queue, WORKER_QUEUE_CAPACITY),
            in_flight=batch,
            batch_size=float(batch),
            max_batch=64,
            utilization=1.0 if busy else 0.0,
            service_ms={self.model: service},
            served=seq * 10,
            rejected=0,
            expired=0,
            errors=0,
        )


@dataclass(frozen=True)
class Outcome:
    """What happened to one request (times in s on the simulation clock)."""

    k: int
    arrival_s: float
    done_s: float
    device_ms: float  # head(k) + encode (whole model for split n)
    head_end_s: float
    offloaded: bool  # the server's result was used
    fallback: bool  # the result was late (or lost a race): tail(k) ran on the device
    payload_bytes: int = 0
    delivery: Delivery | None = None
    compute_ms: float = 0.0  # all the device computed for it (head, encode, local tail)
    codec: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.done_s - self.arrival_s) * 1000


class DeviceState:
    """One strategy's device: its CPU and its uplink (the server is shared and exogenous)."""

    def __init__(self, device: DeviceProfile, uplink: Uplink, server: EdgeServer) -> None:
        self.device = device
        self.uplink = uplink
        self.server = server
        self.cpu = DeviceCpu()

    def copy(self) -> DeviceState:
        clone = DeviceState.__new__(DeviceState)
        clone.device = self.device
        clone.uplink = self.uplink.copy()
        clone.server = self.server
        clone.cpu = self.cpu.copy()
        return clone

    def run(
        self,
        k: int,
        arrival_s: float,
        deadline_ms: float | None,
        *,
        codec: str | None = None,
        race: bool = False,
    ) -> Outcome:
        """Run one request at split k (under `codec`) from now; `deadline_ms` after arrival
        it falls back. Raced: the device runs tail(k) itself, right after handing the frame
        over, or on a device with several cores right after the head while another core
        encodes; the first result wins and the other is cancelled (no deadline needed)."""
        self.cpu.forget_before(arrival_s)
        cost = self.device.cost(k, codec)
        device_ms = cost.device_ms
        concurrent = race and k < self.device.n and self.device.cores >= 2
        on_cpu_ms = cost.head_ms if concurrent else device_ms
        _, head_end = self.cpu.run_head(arrival_s, on_cpu_ms / 1000)
        if k == self.device.n:
            return Outcome(
                k, arrival_s, head_end, device_ms, head_end, False, False, 0, None, device_ms
            )
        encoded = head_end + (device_ms - on_cpu_ms) / 1000  # on another core when concurrent
        handed = max(encoded, self.uplink.last_handed_s)
        delivery = self.uplink.send(wire_bytes(cost.payload_bytes), handed)
        result_s = self.server.done_s(k, delivery.arrives_s) + self.uplink.one_way_s
        tail_s = self.device.local_tail_ms(k) / 1000
        if race:
            start, end = self.cpu.reserve_until(head_end, tail_s, result_s)
            local_won = end - start >= tail_s - 1e-12 and end < result_s
            done = end if local_won else result_s
            compute = device_ms + (end - start) * 1000
            return Outcome(
                k,
                arrival_s,
                done,
                device_ms,
                head_end,
                not local_won,
                local_won,
                cost.payload_bytes,
                delivery,
                compute,
                cost.codec,
            )
        if deadline_ms is not None and result_s > arrival_s + deadline_ms / 1000:
            _, done = self.cpu.reserve(arrival_s + deadline_ms / 1000, tail_s)
            return Outcome(
                k,
                arrival_s,
                done,
                device_ms,
                head_end,
                False,
                True,
                cost.payload_bytes,
                delivery,
                device_ms + tail_s * 1000,
                cost.codec,
            )
        return Outcome(
            k,
            arrival_s,
            result_s,
            device_ms,
            head_end,
            True,
            False,
            cost.payload_bytes,
            delivery,
            device_ms,
            cost.codec,
        )

    def probe(self, payload_bytes: int, now_s: float) -> Delivery:
        """A probe publish handed over now (after anything already handed to the socket)."""
        handed = max(now_s, self.uplink.last_handed_s)
        return self.uplink.send(wire_bytes(payload_bytes), handed)
