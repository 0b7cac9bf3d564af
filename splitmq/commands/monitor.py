"""`splitmq monitor`: a live terminal view of the fleet; `--once` prints one snapshot.

splitmq monitor --port 1884                 # live tables until Ctrl-C
splitmq monitor --port 1884 --once          # one snapshot of the retained state, then exit
splitmq monitor --port 1884 --once --json   # the same, as JSON for scripts
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.live import Live

from splitmq.monitoring.cli_args import add_watch_arguments, watch_settings
from splitmq.monitoring.dashboard import render, snapshot_dict
from splitmq.monitoring.fleet import FleetWatcher
from splitmq_base.cli import stop_on_signals


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "monitor",
        help="live view of workers, devices and the broker's $SYS figures",
        description="Watch the fleet through the broker: worker telemetry, device state, "
        "availability and the broker's $SYS statistics.",
    )
    add_watch_arguments(parser)
    parser.add_argument(
        "--once", action="store_true", help="print one snapshot and exit (for scripts and tests)"
    )
    parser.add_argument("--json", action="store_true", help="with --once: print JSON")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="with --once: collect for S seconds first (the broker's rates need two $SYS "
        "samples, 5 s apart); default: only the retained state",
    )
    parser.add_argument(
        "--refresh", type=float, default=1.0, metavar="S", help="live view refresh period"
    )
    parser.set_defaults(func=run)


#: Columns of `--once` output that goes to a pipe or a file (rich would assume 80 and cut every
#: name in the tables to a few characters).
PIPED_WIDTH = 200


def run(args: argparse.Namespace) -> int:
    settings, topics = watch_settings(args)
    stop = stop_on_signals()
    with FleetWatcher(settings, topics=topics) as watcher:
        if args.once:
            stop.wait(max(0.0, args.wait))
            snapshot = watcher.snapshot()
            if args.json:
                json.dump(snapshot_dict(snapshot), sys.stdout, indent=2)
                print()
            else:
                console = Console()
                if not console.is_terminal:  # a pipe or a file: no width to fit, cut nothing
                    console = Console(width=PIPED_WIDTH)
                console.print(render(snapshot))
            return 0
        with Live(render(watcher.snapshot()), refresh_per_second=4, screen=False) as live:
            while not stop.wait(max(0.1, args.refresh)):
                live.update(render(watcher.snapshot()))
    return 0
