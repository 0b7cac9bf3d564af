"""Subcommands of the `splitmq` CLI: each module exposes `register(subparsers)`.

`register` adds one subparser and sets `func=run` on it, where `run(args) -> int`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any


def register_modules(subparsers: Any, names: Iterable[str]) -> None:
    """Let each module `splitmq.commands.<name>` register its subparser, in order; a module
    not built yet is skipped (an import error inside a module still raises)."""
    for name in names:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.register(subparsers)
