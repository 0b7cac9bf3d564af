"""Errors of the edge worker.

`RequestError` subclasses describe one bad request; their `code` goes into the error reply
(`ErrorInfo.code`) next to the schema's own frame error codes.
"""

from __future__ import annotations

from splitmq_base.errors import ConfigurationError, SplitmqError


class WorkerError(SplitmqError):
    """Base of every error raised by `edge_worker`."""


class ConfigError(WorkerError, ConfigurationError):
    """A worker configuration file that is missing, unreadable or invalid.

    The message names the file and every bad key with its dotted path.
    """


class QueueLimitsError(WorkerError, ConfigurationError, ValueError):
    """A request queue asked for with a capacity or byte limit below 1 (also a ValueError)."""


class RunnerError(WorkerError, ConfigurationError):
    """The tail runner cannot be built (unknown model, split out of range, no CUDA, ...)."""


class RequestError(WorkerError):
    """One request cannot be served; `code` is the stable reason sent back to the device."""

    code = "bad_request"


class TopicMismatchError(RequestError):
    """The frame's model or split differs from the request topic it was published on."""

    code = "topic_mismatch"


class SplitNotServedError(RequestError):
    """The frame asks for a split this worker does not serve."""

    code = "split_not_served"


class BadInputError(RequestError):
    """The decoded tensor cannot go into the tail: a wrong dtype (e.g. a float image at split 0)
    or NaN/infinite values."""

    code = "bad_input"


class DecodeTimeoutError(RequestError):
    """Decoding the frame took over the worker's per-frame budget (`decode_budget_ms`): the
    request is answered so that its batch-mates are not kept waiting behind it."""

    code = "decode_timeout"


class PrepareMismatchError(RequestError):
    """The request says its image was prepared under another recipe version than the worker's
    (FORMAT.md 11.2): its pixels, and every head output made from them, are not the model's."""

    code = "prepare_mismatch"


class QueueFullError(RequestError):
    """The bounded queue was full (the broker ignored our ReceiveMaximum): rejected, not lost."""

    code = "queue_full"


class WorkerStoppingError(RequestError):
    """The request arrived while the worker was shutting down (answered, not lost)."""

    code = "worker_stopping"


class ComputeError(RequestError):
    """The tail raised while computing a batch."""

    code = "internal"


class WorkerStateError(WorkerError):
    """A lifecycle call out of order: a second `start()`, or `start()` after `stop()`."""


class QueueStateError(WorkerStateError):
    """A request queue closed twice: whoever closes it second has lost track of the worker's
    shutdown (a request arriving after close is answered instead: `WorkerStoppingError`)."""
