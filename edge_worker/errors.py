"""Errors of the edge worker."""


class WorkerError(Exception):
    """Base of every error raised by `edge_worker`."""
