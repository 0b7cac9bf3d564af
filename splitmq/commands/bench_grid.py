"""`splitmq bench grid`: natural bottlenecks and the dynamic-split gain, data rate x batch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from splitmq.bench.grid import DEFAULT_SLOWDOWN, _public, _server_profile, model_grid, plot_model
from splitmq.bench.grid import __doc__ as grid_doc
from splitmq_base.errors import SplitmqError
from splitting.reference import DEFAULT_SERVER_PROFILE


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "grid",
        help="natural bottlenecks and the dynamic-split gain over data rate x server batch",
        description=grid_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", action="append", required=True, help="repeatable")
    parser.add_argument("--json", required=True, metavar="OUT", help="where to write results")
    parser.add_argument("--plots", metavar="DIR", help="write a heatmap PNG per model here")
    parser.add_argument(
        "--slowdown",
        type=float,
        default=DEFAULT_SLOWDOWN,
        help="device compute = this host's times this factor",
    )
    parser.add_argument(
        "--server-profile",
        metavar="PATH",
        default=str(DEFAULT_SERVER_PROFILE),
        help="measured server profile (default: the shipped H200 profile)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=30, help="largest server batch of the grid"
    )
    parser.add_argument("--points", type=int, default=32, help="rates per range")
    parser.add_argument("--cache-dir", metavar="DIR", help="profile cache (default: splitmq's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    # A splitmq error (a bad profile or model) propagates to the CLI's `guarded`: one line
    # on stderr and its exit code.
    try:
        server = _server_profile(args.server_profile)
        results: dict[str, Any] = {}
        with Progress(transient=False) as progress:
            task = progress.add_task("grid", total=len(args.model))
            for name in args.model:
                progress.update(task, description=f"profiling {name}")
                results[name] = model_grid(name, args, server)
                if args.plots:
                    plot_model(name, results[name], Path(args.plots))
                progress.advance(task)
    except OSError as exc:  # a plot or the profile cache that cannot be written
        raise SplitmqError(f"bench grid: {exc}") from exc
    summary = {
        "slowdown": args.slowdown,
        "server_profile": str(args.server_profile) if server else None,
        "rates": {"paper_MBps": [1, 128], "cellular_Mbitps": [0.1, 50]},
        "batches": [1, args.max_batch],
        "models": {name: _public(entry) for name, entry in results.items()},
    }
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    for name, entry in results.items():
        counts = entry["bottlenecks"]
        print(
            f"{name}: {entry['blocks']} blocks, paper {counts['paper']}, bytes {counts['bytes']},"
            f" max gain vs static {entry['max_gain_vs_static']:.1%}"
        )
    return 0
