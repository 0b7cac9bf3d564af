"""`splitmq bench <name>`: every benchmark, each printing a table and writing JSON on request."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.commands import register_module

BENCH_MODULES = (
    "bench_codec",
    "bench_transport",
    "bench_chooser",
    "bench_live",
    "bench_grid",
    "bench_worker",
    "bench_fleet",
    "bench_cold_start",
    "bench_tcp_info",
    "bench_backends",
    "bench_device_footprint",
    "bench_prepare",
    "bench_threads",
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="run a benchmark (codec, transport, chooser)"
    )
    benches = parser.add_subparsers(dest="bench", required=True)
    for name in BENCH_MODULES:
        register_module(benches, name)
