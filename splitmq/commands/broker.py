"""`splitmq broker`: run the embedded Mosquitto in the foreground until Ctrl-C.

SIGINT, SIGTERM and SIGHUP stop mosquitto and remove the temporary directory (exit 0). If
mosquitto exits on its own the command fails with its status and log tail (exit 3). If this
process is killed outright, mosquitto gets SIGTERM from the kernel (broker.launcher).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from broker.launcher import MosquittoBroker
from splitmq.clikit import port_number

POLL_S = 0.2


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "broker", help="run the embedded Mosquitto broker with the project's config"
    )
    parser.add_argument(
        "--port", type=port_number, help="TCP port (default: a free one; never 1883)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--config",
        type=Path,
        help="config template with ${port} and ${bind_address} (default: broker/mosquitto.conf)",
    )
    parser.set_defaults(func=run)


def _stop_on_signals() -> threading.Event:
    """Set by SIGINT, SIGTERM or SIGHUP (a closed terminal), installed before mosquitto starts so
    a signal during start-up still cleans up."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handle)
    return stop


def run(args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    broker = MosquittoBroker(args.port, host=args.host, config_template=args.config)
    try:
        broker.start()
        print(
            f"broker running at {broker.url} (pid {broker.pid}, files in {broker.workdir}); "
            "Ctrl-C stops it",
            flush=True,
        )
        _follow_log(broker, stop)
    finally:
        broker.close()
    print("broker stopped", flush=True)
    return 0


def _follow_log(broker: MosquittoBroker, stop: threading.Event) -> None:
    """Echo the broker's log until a signal arrives; raise if mosquitto exits by itself."""
    shown = 0
    while not stop.is_set():
        text = broker.log_text()
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        broker.check_running()
        stop.wait(POLL_S)
