"""`splitmq bench {codec,transport,chooser}`: benchmarks that print JSON-backed tables."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCH_MODULES = ("bench_codec", "bench_transport", "bench_chooser", "bench_live", "bench_grid")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="run a benchmark (codec, transport, chooser)"
    )
    benches = parser.add_subparsers(dest="bench", required=True)
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(f"splitmq.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"splitmq.commands.{name}":
                continue  # not built yet
            raise
        module.register(benches)
