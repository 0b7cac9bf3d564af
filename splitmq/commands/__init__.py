"""Subcommands of the `splitmq` CLI: each module exposes `register(subparsers)`.

`register` adds one subparser and sets `func=run` on it, where `run(args) -> int`. Every
subparser gets the shared `-v/-q` if the module did not add them itself. A module that fails to
import still appears, as a command that prints the import error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from typing import Any

from splitmq_base.cli import EXIT_RUNTIME, add_verbosity


def register_modules(subparsers: Any, names: Iterable[str]) -> None:
    """Let each module `splitmq.commands.<name>` register its subparser, in order."""
    for name in names:
        register_module(subparsers, name)


def register_module(subparsers: Any, name: str, *, help_text: str | None = None) -> None:
    """Register one command module; if importing it fails, a command that says why."""
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except Exception as exc:  # any import failure: show it rather than hide the command
        register_broken(subparsers, name, exc)
        return
    before = set(subparsers.choices)
    module.register(subparsers)
    for added in set(subparsers.choices) - before:
        ensure_verbosity(subparsers.choices[added])


def register_broken(subparsers: Any, name: str, exc: BaseException) -> None:
    """A stand-in for a command whose module cannot be imported: running it prints the error."""
    reason = f"{type(exc).__name__}: {exc}"
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name.removeprefix("bench_"), help=f"(unavailable: {reason})"
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(args: argparse.Namespace) -> int:
        print(f"splitmq {name}: cannot load this command: {reason}", file=sys.stderr)
        return EXIT_RUNTIME

    parser.set_defaults(func=run)


def ensure_verbosity(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """Give `parser` and its own subcommands (`homeassistant remove`) the shared -v/-q unless
    they have their own, so the flags work before and after a subcommand's name."""
    if "-v" not in parser._option_string_actions and "-q" not in parser._option_string_actions:
        add_verbosity(parser, nested=nested)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                ensure_verbosity(sub, nested=True)
