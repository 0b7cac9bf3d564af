"""`splitmq bench tcp-info`: what `TCP_INFO` on a real socket says of a shaped uplink.

In a network namespace of its own (root and iproute2 needed), the loopback is shaped by the
kernel's token bucket (`tc ... tbf`, MTU 1500) at one rate, then at a lower one. A client sends
frames the size of split 0's (40 KB), each answered by a one-byte acknowledgement, as a broker
answers a publish with its PUBACK. For every frame it records the rate the acknowledgement
implies (what the device's estimator learns from) and what `TCP_INFO` said right after it: the
delivery rate, whether that sample was app-limited, and the RTT against the least RTT seen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import Field

from device_node.tcpinfo import read_tcp_info
from splitmq.bench.errors import BenchError
from splitmq.bench.report import BenchOptions, BenchReport, Provenance
from splitmq_base.models import StrictModel

#: (Mbit/s, frames) of each phase: a link at LTE-like rate, then a drop.
DEFAULT_PHASES: tuple[tuple[float, int], ...] = ((8.0, 12), (2.0, 8))
FRAME_BYTES = 40_000  # about split 0's lossless WebP frame of lite0
GAP_S = 0.2  # between frames: a device sending a few requests a second
TBF = ("burst", "16kb", "latency", "400ms")


class TcpInfoOptions(BenchOptions):
    #: (Mbit/s, frames) of each phase
    phases: tuple[tuple[float, int], ...] = Field(default=DEFAULT_PHASES, strict=False)


class FrameRow(StrictModel):
    """One frame's round: the ack-timed rate and what TCP_INFO said right after."""

    mbit: float
    ack_s: float
    ack_rate_bps: float
    delivery_rate_bps: float | None
    app_limited: bool | None
    rtt_s: float | None
    min_rtt_s: float | None


class PhaseSummary(StrictModel):
    shaped_bps: float
    frames: int
    ack_log_error_p50: float | None
    delivery_log_error_p50: float | None
    app_limited_share: float
    queueing_s_p50: float


class TcpInfoReport(BenchReport):
    benchmark: str = "tcp-info"
    frame_bytes: int = FRAME_BYTES
    phases: list[PhaseSummary]
    rows: list[FrameRow]


def run_tcp_info_bench(options: TcpInfoOptions | None = None) -> TcpInfoReport:
    """Measure in a fresh network namespace; the summary per phase and every frame's row."""
    options = options or TcpInfoOptions()
    namespace = f"splitmq-tcpinfo-{os.getpid()}"
    with _namespace(namespace):
        command = ["ip", "netns", "exec", namespace, sys.executable, "-m", __name__]
        command += ["--phases", json.dumps([list(p) for p in options.phases])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"the measurement failed: {done.stderr.strip()[-500:]}")
    rows = [FrameRow.model_validate(row) for row in json.loads(done.stdout)]
    return TcpInfoReport(provenance=Provenance.collect(options), phases=_summary(rows), rows=rows)


@contextmanager
def _namespace(name: str) -> Iterator[None]:
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "mtu", "1500", "up")
        yield
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BenchError("needs iproute2 (`ip`, `tc`): apt-get install iproute2") from exc
    if done.returncode != 0:
        raise BenchError(f"ip {' '.join(args)}: {done.stderr.strip()} (root needed)")


def measure(phases: Sequence[tuple[float, int]]) -> list[dict[str, Any]]:
    """Inside the namespace: shape the loopback per phase and time each frame's round."""
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_acknowledge, args=(server,), daemon=True).start()
    client = socket.create_connection(server.getsockname()[:2])
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rows = []
    for index, (mbit, frames) in enumerate(phases):
        verb = "add" if index == 0 else "change"
        subprocess.run(
            ["tc", "qdisc", verb, "dev", "lo", "root", "tbf", "rate", f"{mbit}mbit", *TBF],
            check=True,
        )
        for _ in range(frames):
            started = time.perf_counter()
            client.sendall(struct.pack("!I", FRAME_BYTES) + bytes(FRAME_BYTES))
            client.recv(1)
            seconds = time.perf_counter() - started
            info = read_tcp_info(client)
            rows.append(
                {
                    "mbit": mbit,
                    "ack_s": seconds,
                    "ack_rate_bps": FRAME_BYTES / seconds,
                    "delivery_rate_bps": info.delivery_rate_bps if info else None,
                    "app_limited": info.app_limited if info else None,
                    "rtt_s": info.rtt_s if info else None,
                    "min_rtt_s": info.min_rtt_s if info else None,
                }
            )
            time.sleep(GAP_S)
    return rows


def _acknowledge(server: socket.socket) -> None:
    connection, _ = server.accept()
    while header := connection.recv(4, socket.MSG_WAITALL):
        (size,) = struct.unpack("!I", header)
        while size > 0:
            size -= len(connection.recv(min(65536, size)))
        connection.sendall(b"k")


def _summary(rows: list[FrameRow]) -> list[PhaseSummary]:
    """Per phase: each signal's median |log(signal / shaped rate)| and the queueing it saw."""
    phases = []
    for mbit in dict.fromkeys(row.mbit for row in rows):
        mine = [row for row in rows if row.mbit == mbit]
        true_bps = mbit * 1e6 / 8
        usable = [r for r in mine if r.delivery_rate_bps and not r.app_limited]
        phases.append(
            PhaseSummary(
                shaped_bps=true_bps,
                frames=len(mine),
                ack_log_error_p50=_log_error(true_bps, [r.ack_rate_bps for r in mine]),
                delivery_log_error_p50=_log_error(
                    true_bps, [r.delivery_rate_bps for r in usable if r.delivery_rate_bps]
                ),
                app_limited_share=1 - len(usable) / len(mine),
                queueing_s_p50=statistics.median(
                    max(0.0, r.rtt_s - (r.min_rtt_s or 0.0)) for r in mine if r.rtt_s is not None
                ),
            )
        )
    return phases


def _log_error(true_bps: float, rates: list[float]) -> float | None:
    if not rates:
        return None
    return statistics.median(abs(math.log(rate / true_bps)) for rate in rates)


def format_report(result: TcpInfoReport) -> str:
    lines = [f"tcp-info: {result.frame_bytes} B frames through a tbf-shaped loopback"]
    for phase in result.phases:
        delivery, ack = phase.delivery_log_error_p50, phase.ack_log_error_p50
        lines.append(
            f"  {phase.shaped_bps * 8 / 1e6:g} Mbit/s, {phase.frames} frames: "
            f"|log error| p50 of the ack-timed rate {'n/a' if ack is None else f'{ack:.2f}'}, "
            f"of TCP_INFO's delivery rate "
            f"{'n/a' if delivery is None else f'{delivery:.2f}'} "
            f"({phase.app_limited_share:.0%} of its samples app-limited), "
            f"queueing (rtt - min_rtt) p50 {phase.queueing_s_p50 * 1000:.1f} ms"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """The part that runs inside the namespace: print the rows as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--phases", required=True)
    args = parser.parse_args(argv)
    phases = [(float(mbit), int(frames)) for mbit, frames in json.loads(args.phases)]
    print(json.dumps(measure(phases)))


if __name__ == "__main__":
    main()
