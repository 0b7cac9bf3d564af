"""A published request waiting for its result, and what counts as its answer.

The link registers a `PendingRequest` before publishing and settles it exactly once: with the
worker's reply, or with the reason the device computes the tail itself (a `Fallback` value).
"""

from __future__ import annotations

import secrets
from concurrent.futures import Future
from dataclasses import dataclass, field

from device_node.records import Fallback
from schemas.messages import ResultMessage


@dataclass(frozen=True)
class Outcome:
    """How a wait for a result ended: the server's message, or a reason to fall back."""

    message: ResultMessage | None
    received_at: float
    failure: Fallback | None = None
    detail: str = ""  # more about the failure (the broker's reason code), "" if nothing


@dataclass
class PendingRequest:
    """A published request waiting for its result."""

    request_id: str
    model: str
    split: int
    nbytes: int
    published_at: float
    future: Future[Outcome] = field(default_factory=Future)
    uplink_s: float | None = None
    #: The model's class count: a reply naming a class index at or above it is not an answer
    #: of this model (None: not known, only the lower bound is checked).
    num_classes: int | None = None
    #: The request's CorrelationData: random, so that nobody who reads the device's results
    #: can guess the next one and answer in the worker's place.
    token: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    #: The worker a direct request was addressed to (None: the shared topic, any worker).
    worker_id: str | None = None

    def settle(self, outcome: Outcome) -> bool:
        """Complete the wait once; later outcomes (a result after a failure) are ignored."""
        try:
            self.future.set_result(outcome)
        except Exception:  # concurrent.futures.InvalidStateError: already settled
            return False
        return True


def reply_mismatch(result: ResultMessage, pending: PendingRequest) -> str | None:
    """Why a reply cannot be the answer to `pending` (None: it can). An error reply only makes
    the device compute locally, so it needs to match the model and split alone."""
    if result.model != pending.model or result.split != pending.split:
        return (
            f"reply for {result.model} split {result.split}, the request was {pending.model} "
            f"split {pending.split}"
        )
    if result.status == "ok" and result.request_id != pending.request_id:
        return f"reply names request {result.request_id[:80]!r}, not {pending.request_id!r}"
    limit = pending.num_classes
    for p in result.top5:
        if p.index < 0 or (limit is not None and p.index >= limit):
            return f"prediction out of range: class {p.index} of a model with {limit} classes"
        if not 0.0 <= p.score <= 1.0:
            return f"prediction out of range: class {p.index}, score {p.score}"
    return None


def sender_mismatch(sender: str, result: ResultMessage, pending: PendingRequest) -> str | None:
    """Why a reply published under worker `sender` (the result topic's worker level, which a
    secure broker ties to the publisher's login) cannot be that worker's answer to `pending`
    (None: it can). The payload's `worker_id` is free text, so it must agree with the topic."""
    if result.worker_id != sender:
        return f"reply published by worker {sender!r} claims to come from {result.worker_id[:80]!r}"
    if pending.worker_id is not None and sender != pending.worker_id:
        return f"reply from worker {sender!r} to a request sent to {pending.worker_id!r} only"
    return None


def fallback_reason(outcome: Outcome) -> tuple[Fallback, str]:
    """Why a wait ended without a usable answer, and the detail: the worker's error code if
    its reply had one, else what the failure carried (the broker's reason code)."""
    message = outcome.message
    if message is None:
        return outcome.failure or Fallback.TIMEOUT, outcome.detail
    if message.status == "ok":  # valid on the wire, but no prediction to record
        return Fallback.BAD_REPLY, ""
    code = message.error.code if message.error else ""
    if message.status == "error":
        return Fallback.ERROR_REPLY, code or "unknown"
    if message.status == "expired":
        return Fallback.EXPIRED, code
    return Fallback.REJECTED, code
