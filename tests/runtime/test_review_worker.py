"""Review findings on the edge worker, against a real Mosquitto: one bad request must not cost
its batch-mates their replies (an unusable ResponseTopic, a non-finite tensor)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.client import BrokerSettings, make_client, start_client, stop_client
from edge_worker.runner import EchoTailRunner, ModelTailRunner, echo_model_info
from edge_worker.worker import EdgeWorker
from schemas.frame import Frame, encode_frame
from schemas.messages import Prediction, ResultMessage, parse_result
from schemas.topics import Topics
from tests.runtime.review_support import TINY, TINY_SPLIT, tiny_model, worker_config

pytestmark = pytest.mark.integration

TOPICS = Topics()


class Replies:
    """A device-side client that publishes raw requests and collects replies by request id."""

    def __init__(self, settings: BrokerSettings, device_id: str = "review-device") -> None:
        self.topic = TOPICS.result(device_id)
        self.results: dict[str, ResultMessage] = {}
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = make_client(settings, device_id)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        start_client(self.client)
        assert subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        result = parse_result(msg.payload)
        with self._changed:
            self.results[result.request_id] = result
            self._changed.notify_all()

    def send(
        self,
        model: str,
        split: int,
        payload: bytes,
        request_id: str,
        *,
        reply_to: str | None = None,
    ) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topic if reply_to is None else reply_to
        props.CorrelationData = request_id.encode()
        props.MessageExpiryInterval = 30
        self.client.publish(TOPICS.request(model, split), payload, 1, properties=props)

    def wait(self, request_ids: Sequence[str], timeout_s: float = 15) -> dict[str, ResultMessage]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not all(rid in self.results for rid in request_ids):
                left = deadline - time.monotonic()
                missing = [rid for rid in request_ids if rid not in self.results]
                assert left > 0, f"no result for {missing}"
                self._changed.wait(left)
            return {rid: self.results[rid] for rid in request_ids}

    def close(self) -> None:
        stop_client(self.client)


@pytest.fixture
def replies(broker_settings: BrokerSettings) -> Iterator[Replies]:
    client = Replies(broker_settings)
    yield client
    client.close()


# -- worker: one bad request must not cost its batch-mates their replies -----------------------


class SlowFirstEcho(EchoTailRunner):
    """Echo runner whose first batch sleeps, so the requests sent meanwhile form one batch."""

    def __init__(self, delay_s: float) -> None:
        super().__init__([echo_model_info()])
        self.delay_s = delay_s
        self.batches: list[list[str]] = []

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        if not self.batches:
            time.sleep(self.delay_s)
        self.batches.append([frame.header.request_id for frame in frames])
        return super().run_batch(model, split, frames)


def echo_frame(request_id: str) -> bytes:
    info = echo_model_info()
    return encode_frame(
        np.zeros(info.split_shapes[1], dtype=np.float32),
        codec="lossless",
        request_id=request_id,
        model=info.name,
        fingerprint=info.fingerprint,
        split=1,
    )


@pytest.mark.parametrize("bad_topic", ["reply/+/x", "#", ""])
def test_a_request_with_an_unusable_response_topic_does_not_lose_its_batch(
    broker_settings: BrokerSettings, replies: Replies, bad_topic: str
) -> None:
    runner = SlowFirstEcho(delay_s=0.5)
    config = worker_config(broker_settings, models=[{"name": "echo"}], max_batch=8)
    with EdgeWorker(config, runner) as worker:
        replies.send("echo", 1, echo_frame("first"), "first")
        time.sleep(0.2)  # "first" is computing; the next ones queue up behind it
        replies.send("echo", 1, echo_frame("bad"), "bad", reply_to=bad_topic)
        good = [f"good-{i}" for i in range(3)]
        for rid in good:
            replies.send("echo", 1, echo_frame(rid), rid)
        results = replies.wait(["first", *good])
        assert all(result.status == "ok" for result in results.values())
        # Counted, not silently gone; the worker still serves afterwards.
        assert worker.stats.snapshot().errors == 1
        replies.send("echo", 1, echo_frame("after"), "after")
        assert replies.wait(["after"])["after"].status == "ok"
        assert "bad" not in [rid for batch in runner.batches for rid in batch]


def test_a_non_finite_tensor_is_refused_alone_and_its_batch_mates_are_served(
    broker_settings: BrokerSettings, replies: Replies
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
            replies.send(TINY, TINY_SPLIT, frame, rid)
        results = replies.wait(list(tensors))
    refused = results.pop("nan")
    assert refused.status == "error"
    assert refused.error is not None and refused.error.code == "bad_input"
    assert all(result.status == "ok" and len(result.top5) == 5 for result in results.values())
