"""`splitmq broker`: run the embedded Mosquitto in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from broker.launcher import MosquittoBroker
from splitmq.clikit import stop_on_signals


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "broker", help="run the embedded Mosquitto broker with the project's config"
    )
    parser.add_argument("--port", type=int, help="TCP port (default: a free one; never 1883)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--config",
        type=Path,
        help="config template with ${port} and ${bind_address} (default: broker/mosquitto.conf)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    broker = MosquittoBroker(args.port, host=args.host, config_template=args.config)
    broker.start()
    print(f"broker running at {broker.url} (pid {broker.pid}); Ctrl-C stops it", flush=True)
    try:
        _follow_log(broker)
    finally:
        broker.close()
    print("broker stopped", flush=True)
    return 0


def _follow_log(broker: MosquittoBroker) -> None:
    """Echo the broker's log until a signal arrives or mosquitto exits."""
    stop = stop_on_signals()
    shown = 0
    while not stop.is_set():
        text = broker.log_text()
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        if not broker.is_running():
            print("mosquitto exited", file=sys.stderr)
            return
        time.sleep(0.2)
