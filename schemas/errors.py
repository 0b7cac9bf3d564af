"""Errors of the wire contract. Every error has a stable `code`, used in error replies."""


class SchemaError(Exception):
    """Base of every error raised by `schemas`."""

    code = "schema_error"
