"""Errors of the splitmq application package (CLI, demo, benchmarks, simulator)."""


class SplitmqError(Exception):
    """Base of every error raised by the splitmq application package."""
