"""What `splitmq worker` tells its user: one readable line of what it serves, then "serving"
once, and only once it is connected; a host that never resolves never gets "serving"."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from broker.launcher import MosquittoBroker
from edge_worker.cli import served_summary

SPLITMQ = str(Path(sys.executable).parent / "splitmq")


def run_worker(*flags: str, for_s: float) -> tuple[str, str]:
    process = subprocess.Popen(
        [SPLITMQ, "worker", "--runner", "echo", "--worker-id", "w-announce", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # the worker is up (Ctrl-C before that is "interrupted")
    time.sleep(for_s)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return first + out, err


def test_it_says_serving_once_connected(broker: MosquittoBroker) -> None:
    out, _ = run_worker("--host", broker.host, "--port", str(broker.port), for_s=4.0)
    lines = out.splitlines()
    assert lines[0] == (
        "worker w-announce: efficientnet-lite0 at splits 0-1 on cpu; connecting to "
        f"mqtt://{broker.host}:{broker.port} (Ctrl-C stops it)"
    )
    assert lines[1:] == [f"worker w-announce serving on mqtt://{broker.host}:{broker.port}",
                         "worker w-announce stopped"]  # fmt: skip
    assert "{" not in out


def test_an_unresolvable_host_never_gets_serving() -> None:
    out, err = run_worker("--host", "no-such-host.invalid", for_s=3.0)
    assert "serving" not in out
    assert "cannot resolve the host name" in err


def test_served_splits_read_as_ranges() -> None:
    assert served_summary({"m": [5, 0, 1, 2, 9]}) == "m at splits 0-2, 5, 9"
    assert served_summary({"a": [0], "b": [1, 2]}) == "a at splits 0; b at splits 1-2"
