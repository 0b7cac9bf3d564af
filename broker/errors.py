"""Errors of the broker launcher and client settings."""


class BrokerError(Exception):
    """Base of every error raised by `broker`."""
