"""What the device takes as the answer to a pending request (device_node.pending)."""

from __future__ import annotations

import pytest

from device_node.pending import Outcome, PendingRequest, fallback_reason, reply_mismatch
from device_node.records import Fallback
from schemas.messages import ErrorInfo, Prediction, ResultMessage


def _ok(index: int, score: float = 0.5) -> ResultMessage:
    return ResultMessage(
        request_id="r1",
        status="ok",
        model="m",
        split=3,
        worker_id="w1",
        top5=[Prediction(index=index, label="x", score=score)],
    )


@pytest.mark.parametrize(("index", "fits"), [(0, True), (999, True), (1000, False), (10**9, False)])
def test_a_reply_must_name_a_class_of_the_model(index: int, fits: bool) -> None:
    pending = PendingRequest("r1", "m", 3, 100, 0.0, num_classes=1000)
    problem = reply_mismatch(_ok(index), pending)
    assert (problem is None) is fits
    if not fits:
        assert "1000 classes" in str(problem)


def test_without_a_class_count_any_index_passes() -> None:
    # (Negative indices never parse: Prediction.index is a count.)
    pending = PendingRequest("r1", "m", 3, 100, 0.0)
    assert reply_mismatch(_ok(10**6), pending) is None


def test_a_score_outside_zero_to_one_is_refused() -> None:
    pending = PendingRequest("r1", "m", 3, 100, 0.0, num_classes=10)
    assert "score" in str(reply_mismatch(_ok(1, score=1.5), pending))


def _failed(status: str, code: str | None) -> ResultMessage:
    error = ErrorInfo(code=code, message="no") if code is not None else None
    return ResultMessage.model_validate(
        {"request_id": "r1", "status": status, "model": "m", "split": 3, "worker_id": "w1",
         "error": error.model_dump() if error is not None else None}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome(_failed("error", "bad_frame"), 1.0), (Fallback.ERROR_REPLY, "bad_frame")),
        (Outcome(_failed("rejected", "queue_full"), 1.0), (Fallback.REJECTED, "queue_full")),
        (Outcome(_failed("expired", "expired"), 1.0), (Fallback.EXPIRED, "expired")),
        (Outcome(None, 1.0), (Fallback.TIMEOUT, "")),
        (Outcome(None, 1.0, Fallback.REFUSED, "135"), (Fallback.REFUSED, "135")),
        (Outcome(_ok(1).model_copy(update={"top5": []}), 1.0), (Fallback.BAD_REPLY, "")),
    ],
)
def test_a_failed_wait_names_its_reason_and_keeps_the_code_apart(
    outcome: Outcome, reason: tuple[Fallback, str]
) -> None:
    assert fallback_reason(outcome) == reason
