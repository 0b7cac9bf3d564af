"""A trace-driven TCP proxy that emulates a cellular uplink between a device and its broker.

The device connects to the shaper instead of the broker. Bytes from the device reach the broker
as the trace allows, with the simulator's link model (`splitting.traces.Uplink`): each delivery
opportunity of the trace releases up to `PACKET_PAYLOAD_BYTES` of the device's byte stream that
arrived by then (FIFO, an unused opportunity is lost), and released bytes arrive
`one_way_ms` later. Bytes from the broker reach the device after the one-way delay only. The
trace starts when the shaper starts and is shared by every connection through it (one device,
one link: a reconnect does not reset it).

Threads: one accepting connections, and per connection one reader and one timed writer for each
direction. The shaper reads eagerly, so its queue is unbounded like mahimahi's default queue.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from device_node.errors import DeviceError
from splitting.errors import SplittingError
from splitting.traces import DEFAULT_ONE_WAY_MS, PACKET_PAYLOAD_BYTES, Uplink, UplinkTrace

LOG = logging.getLogger(__name__)
READ_BYTES = 64 * 1024
_CLOSE = b""  # queued after the last chunk of a direction: close the far side


class ShaperError(DeviceError):
    """The shaper cannot start (bad trace, port in use) or was used wrongly."""


@dataclass
class ShaperStats:
    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class _TimedWriter:
    """Writes queued chunks to a socket at their due times (monotonic seconds), in order."""

    def __init__(self, sock: socket.socket, name: str, on_done: Callable[[], None]) -> None:
        self._sock = sock
        self._on_done = on_done
        self._queue: list[tuple[float, int, bytes]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, due: float, chunk: bytes) -> None:
        with self._cond:
            heapq.heappush(self._queue, (due, next(self._seq), chunk))
            self._cond.notify()

    def abort(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _next(self) -> bytes | None:
        """The next chunk once it is due; None when aborted."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._queue:
                    wait = self._queue[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._queue)[2]
                    self._cond.wait(wait)
                else:
                    self._cond.wait()

    def _run(self) -> None:
        try:
            while (chunk := self._next()) is not None and chunk is not _CLOSE:
                self._sock.sendall(chunk)
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            LOG.debug("shaper: write failed: %s", exc)
        finally:
            self._on_done()


class _Connection:
    """One device connection and its broker connection, shaped both ways."""

    def __init__(self, shaper: TraceShaper, device: socket.socket, broker: socket.socket) -> None:
        self._shaper = shaper
        self.device = device
        self.broker = broker
        self.to_broker = _TimedWriter(broker, "shaper-up-write", self._half_done)
        self.to_device = _TimedWriter(device, "shaper-down-write", self._half_done)
        self._readers = [
            threading.Thread(target=self._read_up, name="shaper-up-read", daemon=True),
            threading.Thread(target=self._read_down, name="shaper-down-read", daemon=True),
        ]

    def start(self) -> None:
        self.to_broker.start()
        self.to_device.start()
        for reader in self._readers:
            reader.start()

    def _read_up(self) -> None:
        for chunk in _Reader(self.device):
            for due, piece in self._shaper.schedule_up(chunk):
                self.to_broker.put(due, piece)
        self.to_broker.put(self._shaper.last_up_due(), _CLOSE)

    def _read_down(self) -> None:
        for chunk in _Reader(self.broker):
            self._shaper.count_down(len(chunk))
            self.to_device.put(time.monotonic() + self._shaper.one_way_s, chunk)
        self.to_device.put(time.monotonic() + self._shaper.one_way_s, _CLOSE)

    def _half_done(self) -> None:
        # When either direction ends, the connection is over: close both sockets, so the
        # other side's reader stops too (a TCP proxy cannot keep half a MQTT session).
        self.close()

    def close(self) -> None:
        for sock in (self.device, self.broker):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.to_broker.abort()
        self.to_device.abort()
        self._shaper.forget(self)

    def join(self, timeout: float) -> None:
        for reader in self._readers:
            if reader is not threading.current_thread():
                reader.join(timeout)
        self.to_broker.join(timeout)
        self.to_device.join(timeout)


class _Reader:
    """Iterate over what a socket receives until it closes or fails."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = self._sock.recv(READ_BYTES)
        except OSError:
            raise StopIteration from None
        if not chunk:
            raise StopIteration
        return chunk


class TraceShaper:
    """A TCP proxy to `upstream` (the broker) whose device -> broker direction follows a trace.

    `start()` opens the listening socket (`address` is then where devices connect) and
    `stop()` closes everything; it is also a context manager.
    """

    def __init__(
        self,
        trace: UplinkTrace | str | Path,
        upstream: tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        one_way_ms: float = DEFAULT_ONE_WAY_MS,
        payload_per_opportunity: int = PACKET_PAYLOAD_BYTES,
    ) -> None:
        try:
            self.trace = trace if isinstance(trace, UplinkTrace) else UplinkTrace.read(trace)
            self._uplink = Uplink(
                self.trace, one_way_ms=one_way_ms, payload_per_opportunity=payload_per_opportunity
            )
        except SplittingError as exc:
            raise ShaperError(f"shaper: {exc}") from exc
        self.upstream = upstream
        self.one_way_s = one_way_ms / 1000
        self.capacity = payload_per_opportunity
        self.stats = ShaperStats()
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._server: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._started_at = 0.0
        self._last_up_due = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> TraceShaper:
        if self._server is not None:
            raise ShaperError("shaper already started")
        try:
            server = socket.create_server((self._listen_host, self._listen_port))
        except OSError as exc:
            raise ShaperError(
                f"shaper cannot listen on {self._listen_host}:{self._listen_port}: {exc}"
            ) from exc
        self._server = server
        self._started_at = time.monotonic()
        self._accepter = threading.Thread(target=self._accept, name="shaper-accept", daemon=True)
        self._accepter.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            with contextlib.suppress(OSError):
                server.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        for connection in connections:
            connection.join(timeout_s)
        if self._accepter is not None:
            self._accepter.join(timeout_s)
            self._accepter = None

    def __enter__(self) -> TraceShaper:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) where devices connect."""
        if self._server is None:
            raise ShaperError("shaper not started")
        host, port = self._server.getsockname()[:2]
        return str(host), int(port)

    # -- the link -------------------------------------------------------------------------

    def schedule_up(self, chunk: bytes) -> list[tuple[float, bytes]]:
        """Due times (monotonic) of the pieces of a chunk the device just sent."""
        pieces = []
        with self._lock:
            now = time.monotonic() - self._started_at
            handed = max(now, self._uplink.last_handed_s)
            for start in range(0, len(chunk), self.capacity):
                piece = chunk[start : start + self.capacity]
                delivery = self._uplink.send(len(piece), handed)
                due = self._started_at + delivery.arrives_s
                pieces.append((due, piece))
            self._last_up_due = max(self._last_up_due, pieces[-1][0])
            self.stats.bytes_up += len(chunk)
        return pieces

    def count_down(self, nbytes: int) -> None:
        with self._lock:
            self.stats.bytes_down += nbytes

    def last_up_due(self) -> float:
        with self._lock:
            return max(self._last_up_due, time.monotonic())

    def forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _accept(self) -> None:
        server = self._server
        while server is not None:
            try:
                device, _ = server.accept()
            except OSError:
                return  # closed by stop()
            self._open(device)
            server = self._server

    def _open(self, device: socket.socket) -> None:
        try:
            broker = socket.create_connection(self.upstream, timeout=5.0)
            broker.settimeout(None)
        except OSError as exc:
            LOG.warning("shaper: cannot reach the broker at %s:%s: %s", *self.upstream, exc)
            with contextlib.suppress(OSError):
                device.close()
            return
        for sock in (device, broker):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(self, device, broker)
        with self._lock:
            self._connections.add(connection)
            self.stats.connections += 1
        connection.start()
