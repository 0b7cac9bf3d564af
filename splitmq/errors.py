"""The one error root of splitmq, and the exit codes the command-line entry points return.

Every package base (`SchemaError`, `SplittingError`, `BrokerError`, `DeviceError`,
`WorkerError`) and the application's own errors derive from `SplitmqError`, so a CLI catches
one class. This module imports nothing: `schemas` and `broker` import it without pulling in
torch or paho.
"""

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


class SplitmqError(Exception):
    """Root of every error splitmq raises on purpose; `exit_code` is what a CLI returns for it.

    The application package (demo, benchmarks, simulator) raises it, or a subclass, directly.
    """

    exit_code = EXIT_RUNTIME


class ConfigurationError(SplitmqError):
    """Mixin base for errors that mean "the input or configuration is wrong" (exit code 2)."""

    exit_code = EXIT_CONFIG
