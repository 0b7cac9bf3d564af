"""Subcommands of the `splitmq` CLI: each module exposes `register(subparsers)`.

`register` adds one subparser and sets `func=run` on it, where `run(args) -> int`.
"""
