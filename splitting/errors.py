"""Errors of the split engine."""


class SplittingError(Exception):
    """Base of every error raised by `splitting`."""
