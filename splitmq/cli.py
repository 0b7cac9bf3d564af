"""`splitmq` command line: one subcommand per module in `splitmq.commands`.

Only the module of the command being run is imported (some import torch, which costs seconds),
so `splitmq --help` answers at once; the other commands appear with their one-line help.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from splitmq.commands import register_module
from splitmq_base import __version__
from splitmq_base.cli import configure_logging, guarded

# Modules under splitmq.commands with their one-line help, in the order `--help` lists them.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("profile", "bytes on the wire and device time of every split of a model"),
    ("export", "write a model's onnxruntime build, one graph per block"),
    ("bench", "run a benchmark (codec, transport, chooser, live)"),
    ("broker", "run the embedded Mosquitto broker with the project's config"),
    ("worker", "run an edge worker (subscribes per split, runs tails, replies)"),
    ("device", "run a device node (same as `device-node`)"),
    ("demo", "run a broker, an edge worker and N device nodes; print a live table and a summary"),
    ("monitor", "live view of workers, devices and the broker's $SYS figures"),
    ("exporter", "serve Prometheus metrics of workers, devices and the broker"),
    ("homeassistant", "withdraw decommissioned nodes from Home Assistant"),
    ("config", "print an example config, or check one"),
)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the command named in `argv` (if any) fully registered."""
    parser = argparse.ArgumentParser(
        prog="splitmq", description="Dynamic split computing over MQTT."
    )
    parser.add_argument("--version", action="version", version=f"splitmq {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS:
        if name == chosen:
            register_module(subparsers, name)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)

    def command() -> int:
        if hasattr(args, "verbose"):
            configure_logging(args)
        result: int = args.func(args)
        return result

    return guarded(f"splitmq {args.command}", command)


if __name__ == "__main__":
    sys.exit(main())
