"""`splitmq monitor --once` into a pipe or a file keeps whole names, however long: there is no
terminal width to fit, so nothing is cut to an ellipsis."""

from __future__ import annotations

import io
import time

from rich.console import Console

from schemas.messages import MAX_NAME, DeviceStateMessage
from splitmq.commands.monitor import print_snapshot
from splitmq.monitoring.fleet import BrokerView, DeviceView, FleetSnapshot, WorkerView

# The longest names the wire allows, each ending in a mark that a cut would lose.
WORKER = "w" * (MAX_NAME - 1) + "Z"
DEVICE = "d" * (MAX_NAME - 1) + "Y"
LABEL = "a very long label " * 14 + "X"


def _snapshot() -> FleetSnapshot:
    state = DeviceStateMessage.model_validate(
        {
            "device_id": DEVICE,
            "ts": time.time(),
            "seq": 1,
            "model": "efficientnet-lite0",
            "requests": 3,
            "offloaded": 1,
            "fallbacks": 1,
            "fallback_reasons": {"no_worker": 1},
            "bytes_sent": 10,
            "offload_ratio": 1 / 3,
            "uplink_bps": 1e6,
            "last": {
                "label": LABEL,
                "index": 1,
                "score": 0.5,
                "split": 3,
                "offloaded": True,
                "total_ms": 12.0,
                "worker_id": WORKER,
            },
            "recent": [{"split": 3, "offloaded": True, "total_ms": 12.0}] * 20,
            "latency": {"le_ms": [10.0], "counts": [1], "count": 3, "sum_ms": 30.0},
        }
    )
    return FleetSnapshot(
        workers={WORKER: WorkerView(WORKER, online=True)},
        devices={DEVICE: DeviceView(DEVICE, online=True, state=state)},
        broker=BrokerView(),
        taken_at=time.time(),
    )


def test_piped_output_keeps_the_longest_names_whole() -> None:
    out = io.StringIO()  # not a terminal, as a pipe or a file
    print_snapshot(_snapshot(), Console(file=out))
    text = out.getvalue()
    assert WORKER in text and DEVICE in text and LABEL in text
    assert "…" not in text


def test_a_terminal_keeps_its_own_width() -> None:
    out = io.StringIO()
    print_snapshot(_snapshot(), Console(file=out, force_terminal=True, width=120))
    assert WORKER not in out.getvalue()  # fitted to the terminal, not widened for the names
