"""TCP_INFO read from a real socket, on a loopback the kernel shapes in a namespace of the
test's own (skipped where namespaces cannot be made: not root, no iproute2)."""

from __future__ import annotations

import math
import socket
import subprocess

import pytest

from device_node.tcpinfo import read_tcp_info
from splitmq.bench.errors import BenchError
from splitmq.bench.tcp_info import TcpInfoOptions, run_tcp_info_bench

pytestmark = pytest.mark.integration


def test_an_idle_loopback_connection_has_a_tiny_rtt_and_no_queue() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname()[:2])
    peer, _ = server.accept()
    client.sendall(b"x" * 1000)
    peer.recv(1000)
    info = read_tcp_info(client)
    assert info is not None
    assert 0 < info.min_rtt_s <= info.rtt_s < 0.05
    for sock in (client, peer, server):
        sock.close()


def test_the_kernel_shaped_link_shows_in_the_ack_times_and_the_rtt() -> None:
    try:
        options = TcpInfoOptions(phases=((8.0, 6), (2.0, 4)))
        result = run_tcp_info_bench(options).model_dump()
    except BenchError as exc:
        if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
            raise
        pytest.skip(f"no network namespace here: {exc}")
    fast, slow = result["phases"]
    # Ack-timed rates see the drop to a quarter (the token bucket's burst inflates both).
    fast_rows = [r for r in result["rows"] if r["mbit"] == 8.0]
    slow_rows = [r for r in result["rows"] if r["mbit"] == 2.0]
    ratio = min(r["ack_rate_bps"] for r in fast_rows) / max(r["ack_rate_bps"] for r in slow_rows)
    assert ratio > 2.0
    # The smoothed RTT grows with the frames queued at the slower rate.
    assert slow["queueing_s_p50"] > 2 * fast["queueing_s_p50"] > 0
    # Where TCP_INFO has a delivery rate not limited by the sender, it is the shaped rate.
    usable = [r for r in result["rows"] if r["delivery_rate_bps"] and not r["app_limited"]]
    for row in usable:
        assert abs(math.log(row["delivery_rate_bps"] / (row["mbit"] * 1e6 / 8))) < 0.5
