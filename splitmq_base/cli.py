"""What every splitmq entry point shares: -v/-q, logging, one signal handler, one error guard,
and the table from errors to exit codes.

Imports nothing heavy, so a CLI can build its parser and answer `--help` without torch.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from splitmq_base.errors import ConfigurationError, SplitmqError

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILED = 1
"""The command ran to its end but its result failed (requests lost, a target missed)."""
EXIT_CONFIG = 2
"""Bad usage or configuration: a flag, a config key, a missing file, an unknown model or codec.
argparse exits with 2 for a bad flag as well."""
EXIT_RUNTIME = 3
"""The command could not finish: broker missing or unreachable, the link or a tail failed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C before the command was running (a running command stops cleanly with 0)."""

MAX_PORT = 65535


def port_number(text: str) -> int:
    """argparse `type=` for a TCP port: 1..65535, so `--port 0` is refused, not ignored."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a TCP port in 1..{MAX_PORT}, got {text!r}"
        ) from None
    if not 1 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a TCP port in 1..{MAX_PORT}, got {port}")
    return port


def bounded_int(text: str, low: int, high: int | None, what: str) -> int:
    """An integer flag in low..high (high None: no upper bound), else an argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"{low}..{high}"
        raise argparse.ArgumentTypeError(f"{what} must be {bounds}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse `type=` for a count: an integer >= 1."""
    return bounded_int(text, 1, None, "the value")


def jpeg_quality(text: str) -> int:
    """argparse `type=` for a JPEG quality: 1..100."""
    return bounded_int(text, 1, 100, "JPEG quality")


def add_verbosity(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """`-v` (repeatable) logs more, `-q` prints less: warnings-only logs become errors-only, and a
    command with a live table prints only its summary.

    `nested` is for a sub-subcommand (`homeassistant remove`): its flags set no default, since
    argparse copies a subparser's defaults over what its parent parsed (`homeassistant -v
    remove` would lose the -v)."""
    count_default: Any = argparse.SUPPRESS if nested else 0
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=count_default,
        help="log more (-v info, -vv debug)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=count_default,
        help="print less (no live table, errors only)",
    )
    # The device's old spelling, kept working but out of --help.
    parser.add_argument(
        "--log-level", default=argparse.SUPPRESS if nested else None, help=argparse.SUPPRESS
    )


def configure_logging(args: argparse.Namespace) -> None:
    """Logging at the level -v/-q (or the hidden --log-level) asked for."""
    level = logging.WARNING + 10 * (args.quiet - args.verbose)
    if args.log_level:
        level = logging.getLevelName(args.log_level.upper())
        if not isinstance(level, int):
            level = logging.WARNING
    logging.basicConfig(
        level=max(logging.DEBUG, min(level, logging.CRITICAL)),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, quiet: bool = False
) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr for long work; yields `advance()`. It draws only on a
    terminal and vanishes when done, so piped output and logs stay clean; -q hides it."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda: None
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a long-running command can stop cleanly."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    return stop


def exit_code(error: SplitmqError) -> int:
    """What a command returns for `error`: 2 for bad input or configuration, else 3."""
    return EXIT_CONFIG if isinstance(error, ConfigurationError) else EXIT_RUNTIME


def guarded(prog: str, command: Callable[[], int]) -> int:
    """Run `command`; a splitmq error becomes one line on stderr and its documented exit code."""
    try:
        return command()
    except SplitmqError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
