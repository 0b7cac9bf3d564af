"""`splitmq monitor`: a live terminal view of the fleet; `--once` prints one snapshot.

splitmq monitor --port 1884                 # live tables until Ctrl-C
splitmq monitor --port 1884 --once          # one snapshot of the retained state, then exit
splitmq monitor --port 1884 --once --json   # the same, as JSON for scripts
splitmq monitor --port 1884 --json          # one JSON line per refresh until Ctrl-C
splitmq monitor --config site/users/mon.yaml --port 8883   # broker init's monitor login, TLS
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.measure import Measurement

from splitmq.monitoring.cli_args import add_watch_arguments, warn_if_no_fleet, watch_target
from splitmq.monitoring.dashboard import render, snapshot_dict
from splitmq.monitoring.fleet import FleetSnapshot, FleetWatcher
from splitmq_base.cli import stop_on_signals
from splitmq_base.errors import ConfigurationError


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
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON: with --once one snapshot, else one JSON line per refresh",
    )
    parser.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="with --once: collect for S seconds first (the broker's rates need two $SYS "
        "samples, 5 s apart); default: only the retained state",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=1.0,
        metavar="S",
        help="refresh period of the live view and of the JSON lines",
    )
    parser.set_defaults(func=run)


#: The least width of `--once` output that goes to a pipe or a file.
PIPED_WIDTH = 200


class MonitorUsageError(ConfigurationError):
    """Flags that do not go together."""


def run(args: argparse.Namespace) -> int:
    if args.wait is not None and not args.once:
        raise MonitorUsageError("--wait is for --once (the live view and --json keep collecting)")
    target = watch_target(args)
    stop = stop_on_signals()
    prog = "splitmq monitor"
    with FleetWatcher(target.settings, topics=target.topics) as watcher:
        if args.once:
            stop.wait(max(0.0, args.wait or 0.0))
            snapshot = watcher.snapshot()
            warn_if_no_fleet(snapshot, target, prog=prog, quiet=args.quiet)
            if args.json:
                json.dump(snapshot_dict(snapshot), sys.stdout, indent=2)
                print()
            else:
                print_snapshot(snapshot, Console())
            return 0
        warn_if_no_fleet(watcher.snapshot(), target, prog=prog, quiet=args.quiet)
        if args.json:
            return _json_lines(watcher, stop, args.refresh)
        with Live(render(watcher.snapshot()), refresh_per_second=4, screen=False) as live:
            while not stop.wait(max(0.1, args.refresh)):
                live.update(render(watcher.snapshot()))
    return 0


def print_snapshot(snapshot: FleetSnapshot, console: Console) -> None:
    """Print the tables; into a pipe or a file as wide as the widest row needs, since there is
    no width to fit (rich would assume 80 and cut names, which may be 256 characters long)."""
    tables = render(snapshot)
    if not console.is_terminal:
        unbounded = Console(file=io.StringIO(), width=1_000_000)
        needed = Measurement.get(unbounded, unbounded.options, tables).maximum
        console = Console(file=console.file, width=max(PIPED_WIDTH, needed))
    console.print(tables)


def _json_lines(watcher: FleetWatcher, stop: threading.Event, refresh_s: float) -> int:
    """One compact JSON snapshot per line until a signal, for a pipe (jq, a log shipper)."""
    try:
        while True:
            line = json.dumps(snapshot_dict(watcher.snapshot()), separators=(",", ":"))
            print(line, flush=True)
            if stop.wait(max(0.1, refresh_s)):
                return 0
    except BrokenPipeError:  # the reader went away (`| head`): done, not failed
        return 0
