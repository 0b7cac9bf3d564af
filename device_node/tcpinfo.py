"""What Linux's TCP stack knows of a connection: `TCP_INFO` on the client's own socket.

paho's `Client.socket()` is the real TCP socket, so a device can read the kernel's view of its
uplink: the smoothed RTT against the minimum seen (a queue building up), and the delivery rate of
the latest acknowledged data (meaningless when the sample was app-limited: the sender had
nothing more to send). `splitmq bench tcp-info` measures how well these predict a shaped link.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

#: Offsets in Linux's `struct tcp_info` (include/uapi/linux/tcp.h), stable since 4.9.
_APP_LIMITED_BYTE = 7  # bit 0: tcpi_delivery_rate_app_limited
_RTT_US = 68
_MIN_RTT_US = 148
_DELIVERY_RATE = 160  # bytes per second, u64
_SIZE = _DELIVERY_RATE + 8


@dataclass(frozen=True)
class TcpInfo:
    """The kernel's view of one TCP connection (Linux only)."""

    rtt_s: float
    min_rtt_s: float
    delivery_rate_bps: float  # bytes per second
    app_limited: bool

    @property
    def queueing_s(self) -> float:
        """Smoothed RTT above the least seen: the time our own bytes wait in queues."""
        return max(0.0, self.rtt_s - self.min_rtt_s)


def read_tcp_info(sock: socket.socket) -> TcpInfo | None:
    """`TCP_INFO` of `sock`; None where the platform or kernel does not give it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < _SIZE:
        return None
    (rtt_us,) = struct.unpack_from("I", raw, _RTT_US)
    (min_rtt_us,) = struct.unpack_from("I", raw, _MIN_RTT_US)
    (rate,) = struct.unpack_from("Q", raw, _DELIVERY_RATE)
    return TcpInfo(
        rtt_s=rtt_us / 1e6,
        min_rtt_s=min_rtt_us / 1e6,
        delivery_rate_bps=float(rate),
        app_limited=bool(raw[_APP_LIMITED_BYTE] & 1),
    )
