"""The one error of the benchmarks, under the project's root (`splitmq_base.errors`).

A benchmark that cannot run or finish raises `BenchError` (exit code 3); settings it cannot
run with raise `BenchSettingsError`, which is also a `ConfigurationError` (exit code 2).
"""

from __future__ import annotations

from splitmq_base.errors import ConfigurationError, SplitmqError


class BenchError(SplitmqError):
    """A benchmark could not run: no broker or worker, a device that cannot connect, a run
    without all its replies, a namespace that cannot be set up."""


class BenchSettingsError(BenchError, ConfigurationError):
    """Settings a benchmark cannot run with: the same error, marked as bad configuration."""
