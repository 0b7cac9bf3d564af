"""The edge worker, against a real Mosquitto: one bad request must not cost
its batch-mates their replies (an unusable ResponseTopic, a non-finite tensor)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import encode_frame
from schemas.topics import Topics
from tests.support.scaled_model import TINY, TINY_SPLIT, tiny_model, worker_config
from tests.support.worker_clients import Requester, SlowFirstRunner, echo_frame

pytestmark = pytest.mark.integration

TOPICS = Topics()


# -- worker: one bad request must not cost its batch-mates their replies -----------------------


UNUSABLE_TOPICS = ["reply/+/x", "#", ""]
WILDCARD_TOPICS = ["reply/+/x", "#"]  # paho refuses to publish on either


@pytest.mark.parametrize("bad_topic", WILDCARD_TOPICS)
def test_a_request_with_an_unusable_response_topic_does_not_lose_its_batch(
    broker_settings: BrokerSettings,
    requester: Requester,
    monkeypatch: pytest.MonkeyPatch,
    bad_topic: str,
) -> None:
    runner = SlowFirstRunner(delay_s=0.5)
    config = worker_config(broker_settings, models=[{"name": "echo"}], max_batch=8)
    with EdgeWorker(config, runner) as worker:
        # A request asking for a reply elsewhere is refused before it is queued (the next
        # test), so the unusable topic is put where the batch publishes "bad"'s replies.
        publish = worker.link.reply

        def reply(topic: str, correlation_data: bytes | None, payload: bytes) -> None:
            publish(bad_topic if correlation_data == b"bad" else topic, correlation_data, payload)

        monkeypatch.setattr(worker.link, "reply", reply)
        requester.send("echo", 1, echo_frame("first"), "first")
        time.sleep(0.2)  # "first" is computing; the next ones queue up behind it
        requester.send("echo", 1, echo_frame("bad"), "bad")
        good = [f"good-{i}" for i in range(3)]
        for rid in good:
            requester.send("echo", 1, echo_frame(rid), rid)
        results = requester.wait(["first", *good], timeout_s=15)
        assert runner.batches[1] == ["bad", *good], "the bad request leads its batch-mates"
        assert all(result.status == "ok" for result in results)
        # Counted, not silently gone; the worker still serves afterwards.
        assert worker.stats.snapshot().errors == 1
        requester.send("echo", 1, echo_frame("after"), "after")
        assert requester.wait(["after"], timeout_s=15)[0].status == "ok"
        assert "bad" not in requester.results


@pytest.mark.parametrize("bad_topic", UNUSABLE_TOPICS)
def test_a_request_with_an_unusable_response_topic_is_refused_before_it_is_computed(
    broker_settings: BrokerSettings, requester: Requester, bad_topic: str
) -> None:
    runner = SlowFirstRunner(delay_s=0.0)
    config = worker_config(broker_settings, models=[{"name": "echo"}], max_batch=8)
    with EdgeWorker(config, runner) as worker:
        requester.send("echo", 1, echo_frame("bad"), "bad", reply_to=bad_topic)
        requester.send("echo", 1, echo_frame("after"), "after")
        # Same connection, same order: once "after" is answered "bad" was handled.
        assert requester.wait(["after"], timeout_s=15)[0].status == "ok"
        # Counted, not silently gone; the worker still serves afterwards.
        assert worker.stats.snapshot().errors == 1
    assert "bad" not in runner.computed
    assert "bad" not in requester.results


def test_a_non_finite_tensor_is_refused_alone_and_its_batch_mates_are_served(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    model = tiny_model()
    runner = ModelTailRunner({TINY: model}, {TINY: [TINY_SPLIT]})
    shape = model.split_shapes()[TINY_SPLIT]
    rng = np.random.default_rng(0)
    tensors = {f"ok-{i}": rng.standard_normal(shape).astype(np.float32) for i in range(3)}
    poisoned = rng.standard_normal(shape).astype(np.float32)
    poisoned[0, 0, 0] = np.nan
    tensors["nan"] = poisoned
    config = worker_config(broker_settings, max_batch=8, max_wait_ms=300.0)
    with EdgeWorker(config, runner):
        for rid, tensor in tensors.items():
            frame = encode_frame(
                tensor,
                codec="lossless",
                request_id=rid,
                model=TINY,
                fingerprint=model.fingerprint,
                split=TINY_SPLIT,
            )
            requester.send(TINY, TINY_SPLIT, frame, rid)
        results = dict(zip(tensors, requester.wait(list(tensors), timeout_s=15), strict=True))
    refused = results.pop("nan")
    assert refused.status == "error"
    assert refused.error is not None and refused.error.code == "bad_input"
    assert all(result.status == "ok" and len(result.top5) == 5 for result in results.values())
