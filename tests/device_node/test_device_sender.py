"""Who answered a request is the result topic's worker level, never the payload's word."""

from __future__ import annotations

from device_node.pending import PendingRequest, sender_mismatch
from schemas.messages import Prediction, ResultMessage


def _ok(worker_id: str) -> ResultMessage:
    return ResultMessage(
        request_id="r1",
        status="ok",
        model="m",
        split=3,
        worker_id=worker_id,
        top5=[Prediction(index=1, label="x", score=0.5)],
    )


def test_a_reply_naming_another_worker_than_its_topic_is_forged() -> None:
    pending = PendingRequest("r1", "m", 3, 100, 0.0)
    assert sender_mismatch("w1", _ok("w1"), pending) is None
    problem = sender_mismatch("w2", _ok("w1"), pending)
    assert problem is not None and "'w2'" in problem and "'w1'" in problem


def test_a_direct_request_is_answered_only_by_the_worker_it_went_to() -> None:
    pending = PendingRequest("r1", "m", 3, 100, 0.0, worker_id="w1")
    assert sender_mismatch("w1", _ok("w1"), pending) is None
    assert "sent to 'w1' only" in str(sender_mismatch("w2", _ok("w2"), pending))
