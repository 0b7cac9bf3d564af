"""The edge worker against a real Mosquitto and the real efficientnet-lite0."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import torch

from broker.launcher import MosquittoBroker
from edge_worker.link import InboundRequest, WorkerLink
from edge_worker.runner import EchoTailRunner, ModelTailRunner, candidate_splits, echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings, make_client, start_client, stop_client
from schemas.frame import Frame, encode_frame
from schemas.messages import (
    Prediction,
    TelemetryMessage,
    parse_status,
    parse_telemetry,
)
from schemas.topics import Topics
from splitmq.worker_process import worker_popen
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.registry import load_model
from tests.support.waiting import wait_for_retained, wait_until
from tests.support.worker_clients import Requester, SlowFirstRunner, echo_frame, worker_config

pytestmark = pytest.mark.integration

MODEL = "efficientnet-lite0"
TOPICS = Topics()


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    torch.set_num_threads(1)  # the test machine's cores are shared
    return load_model(MODEL)


@pytest.fixture(scope="module")
def photo(lite0: SplitModel) -> np.ndarray:
    _, image = sample_images()[0]
    return lite0.prepare_image(image)


@pytest.fixture(scope="module")
def candidate(lite0: SplitModel) -> int:
    """A natural bottleneck past split 0 (where an int8 frame beats the JPEG input)."""
    inner = [k for k in candidate_splits(lite0, "int8") if k > 0]
    assert inner, "efficientnet-lite0 has no inner natural bottleneck"
    return inner[len(inner) // 2]


@pytest.fixture
def lite0_worker(
    broker_settings: BrokerSettings, lite0: SplitModel, candidate: int
) -> Iterator[EdgeWorker]:
    runner = ModelTailRunner({MODEL: lite0}, {MODEL: [0, candidate]})
    with EdgeWorker(worker_config(broker_settings), runner) as worker:
        yield worker


def lite0_frame(
    model: SplitModel, photo: np.ndarray, split: int, request_id: str, **kwargs: object
) -> bytes:
    x = model.preprocess(photo)
    tensor = photo if split == 0 else model.head(x, split)[0].numpy()
    return encode_frame(
        tensor,
        codec="lossless",
        request_id=request_id,
        model=model.name,
        fingerprint=model.fingerprint,
        split=split,
        **kwargs,  # type: ignore[arg-type]
    )


def local_top5(model: SplitModel, photo: np.ndarray) -> tuple[list[int], list[float]]:
    probabilities = torch.softmax(model.forward(model.preprocess(photo)), dim=1)[0]
    top = torch.topk(probabilities, 5)
    return top.indices.tolist(), top.values.tolist()


# -- tests ------------------------------------------------------------------------------------


def test_valid_frames_get_the_unsplit_models_answer(
    lite0_worker: EdgeWorker,
    requester: Requester,
    lite0: SplitModel,
    photo: np.ndarray,
    candidate: int,
) -> None:
    requester.send(MODEL, candidate, lite0_frame(lite0, photo, candidate, "mid"), "mid")
    requester.send(MODEL, 0, lite0_frame(lite0, photo, 0, "image"), "image")
    indices, scores = local_top5(lite0, photo)
    for result in requester.wait(["mid", "image"]):
        assert result.status == "ok", result.error
        assert result.worker_id == "test-worker" and result.model == MODEL
        # Lossless codec and max_batch=1: the same logits as the whole model, bit for bit.
        assert [p.index for p in result.top5] == indices
        assert [p.score for p in result.top5] == scores
        assert result.top5[0].label == lite0.labels[indices[0]]
        assert result.timings is not None and result.timings.batch_size == 1
        assert result.timings.compute_ms > 0
    assert [r.split for r in requester.wait(["mid", "image"])] == [candidate, 0]
    assert b"mid" in requester.correlations and b"image" in requester.correlations


def test_bad_frames_get_error_replies_and_the_worker_keeps_serving(
    lite0_worker: EdgeWorker,
    requester: Requester,
    lite0: SplitModel,
    photo: np.ndarray,
    candidate: int,
) -> None:
    good = lite0_frame(lite0, photo, candidate, "good")
    foreign = encode_frame(
        lite0.head(lite0.preprocess(photo), candidate)[0].numpy(),
        codec="lossless",
        request_id="foreign",
        model=MODEL,
        fingerprint="0123456789abcdef",
        split=candidate,
    )
    requester.send(MODEL, candidate, good[: len(good) // 2], "truncated")
    requester.send(MODEL, candidate, b"JUNK" + good[4:], "magic")
    requester.send(MODEL, candidate, foreign, "foreign")
    requester.send(MODEL, 0, good, "wrong-topic")  # a split-k frame on the split-0 topic
    requester.send(MODEL, candidate, good, "good")
    bad = requester.wait(["truncated", "magic", "foreign", "wrong-topic"])
    assert [r.status for r in bad] == ["error"] * 4
    codes = [r.error.code for r in bad if r.error is not None]
    assert codes == ["truncated", "bad_magic", "fingerprint_mismatch", "topic_mismatch"]
    assert all(r.top5 == [] for r in bad)
    assert requester.wait(["good"])[0].status == "ok"
    snapshot = lite0_worker.stats.snapshot()
    assert snapshot.errors == 4 and snapshot.served == 1


def test_expired_requests_are_not_computed_and_are_counted(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    runner = SlowFirstRunner(delay_s=1.3)
    config = worker_config(broker_settings, models=[{"name": "echo"}], runner="echo")
    with EdgeWorker(config, runner) as worker:
        requester.send("echo", 1, echo_frame("blocker"), "blocker")
        time.sleep(0.1)  # the blocker is computing now; the next ones wait in the queue
        # Expires by MQTT MessageExpiryInterval (1 s) while the blocker takes 1.3 s ...
        requester.send("echo", 1, echo_frame("mqtt-expiry"), "mqtt-expiry", expiry_s=1)
        # ... and by the frame's own deadline, measured from receipt.
        requester.send("echo", 1, echo_frame("deadline", deadline_ms=300), "deadline")
        requester.send("echo", 1, echo_frame("patient", deadline_ms=60_000), "patient")
        results = requester.wait(["blocker", "mqtt-expiry", "deadline", "patient"])
        assert [r.status for r in results] == ["ok", "expired", "expired", "ok"]
        assert runner.computed == ["blocker", "patient"]
        assert worker.stats.snapshot().expired == 2


def test_telemetry_is_retained_and_cleared_on_shutdown(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    config = worker_config(
        broker_settings, models=[{"name": "echo"}], runner="echo", queue_capacity=16, max_batch=4
    )
    worker = EdgeWorker(config).start()
    try:
        requester.send("echo", 1, echo_frame("t1"), "t1")
        assert requester.wait(["t1"])[0].status == "ok"

        def served_one(payload: bytes) -> bool:
            return bool(payload) and parse_telemetry(payload).served >= 1

        seen = wait_for_retained(broker_settings, TOPICS.telemetry("test-worker"), served_one)
        telemetry: TelemetryMessage = parse_telemetry(seen[-1])
        assert telemetry.worker_id == "test-worker" and telemetry.served == 1
        assert telemetry.models == {"echo": [0, 1]}
        assert telemetry.queue_capacity == 16 and telemetry.max_batch == 4
        assert telemetry.device == "cpu" and telemetry.interval_s == 0.5
        assert set(telemetry.service_ms["echo"]) == {1}
        assert 0 <= telemetry.utilization <= 1
        status = wait_for_retained(broker_settings, TOPICS.status("test-worker"), bool)
        assert parse_status(status[-1]).state == "online"
    finally:
        worker.stop()
    # A new subscriber now gets no telemetry (the retained message was cleared) and "offline".
    after = wait_for_retained(broker_settings, TOPICS.telemetry("test-worker"), bool, 0.5)
    assert after == []
    status = wait_for_retained(broker_settings, TOPICS.status("test-worker"), bool)
    assert parse_status(status[-1]).state == "offline"


def test_burst_of_qos1_requests_is_fully_answered_with_a_small_queue(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    """2,400 requests from 4 publishers into a worker that advertises ReceiveMaximum 8: every
    request gets exactly one ok result, none is rejected or lost. (Mosquitto 2.0.11 stops
    enforcing ReceiveMaximum once acknowledgements flow, so the worker may hold more than 8;
    test_link_* below checks the flow control itself.)"""
    config = worker_config(
        broker_settings,
        models=[{"name": "echo"}],
        runner="echo",
        queue_capacity=8,
        max_batch=4,
        max_wait_ms=0.5,
    )
    publishers = [make_client(broker_settings, f"burst-pub-{i}") for i in range(4)]
    for client in publishers:
        start_client(client)
    ids = [f"b{i}" for i in range(2400)]
    frames = {rid: echo_frame(rid) for rid in ids}
    try:
        with EdgeWorker(config) as worker:

            def publish_all(client: mqtt.Client, part: list[str]) -> None:
                for rid in part:
                    requester.send("echo", 1, frames[rid], rid, client=client)

            threads = [
                threading.Thread(target=publish_all, args=(client, ids[i::4]))
                for i, client in enumerate(publishers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            results = requester.wait(ids, timeout_s=60)
            snapshot = worker.stats.snapshot()
    finally:
        for client in publishers:
            stop_client(client)
    import collections

    print(
        collections.Counter((r.status, r.error.code if r.error else None) for r in results),
        snapshot,
    )
    assert [r.status for r in results].count("ok") == len(ids)
    assert {r.request_id for r in results} == set(ids)
    assert snapshot.rejected == 0 and snapshot.served == len(ids)
    assert len(requester.correlations) == len(ids)  # exactly one reply each


def test_worker_keeps_serving_after_a_broker_restart(
    broker: MosquittoBroker, broker_settings: BrokerSettings, requester: Requester
) -> None:
    config = worker_config(broker_settings, models=[{"name": "echo"}], runner="echo")
    with EdgeWorker(config) as worker:
        requester.send("echo", 1, echo_frame("before"), "before")
        assert requester.wait(["before"])[0].status == "ok"
        broker.restart()
        sessions = [worker.link.session, requester.session]
        wait_until(lambda: all(s.connection >= 2 for s in sessions), 15, "both to reconnect")
        assert all(s.wait_subscribed(5) for s in sessions)
        requester.send("echo", 1, echo_frame("after"), "after")
        assert requester.wait(["after"])[0].status == "ok"
        # The restarted broker kept no retained messages (no persistence); the worker
        # published its status and telemetry again when it reconnected.
        status = wait_for_retained(broker_settings, TOPICS.status("test-worker"), bool)
        assert parse_status(status[-1]).state == "online"
        telemetry = wait_for_retained(broker_settings, TOPICS.telemetry("test-worker"), bool)
        assert parse_telemetry(telemetry[-1]).worker_id == "test-worker"


def test_two_workers_share_one_split(broker_settings: BrokerSettings, requester: Requester) -> None:
    configs = [
        worker_config(broker_settings, worker_id=f"w{i}", models=[{"name": "echo"}], runner="echo")
        for i in range(2)
    ]
    with EdgeWorker(configs[0]) as first, EdgeWorker(configs[1]) as second:
        ids = [f"s{i}" for i in range(40)]
        for rid in ids:
            requester.send("echo", 1, echo_frame(rid), rid)
        results = requester.wait(ids)
    by_worker = {r.worker_id for r in results}
    assert by_worker == {"w0", "w1"}, "both workers of the share group take requests"
    assert first.stats.snapshot().served + second.stats.snapshot().served == len(ids)


def test_link_advertises_receive_maximum_and_acks_manually(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    """Unacknowledged deliveries stop at ReceiveMaximum; acking releases the rest, none lost."""
    delivered: list[InboundRequest] = []
    arrived = threading.Condition()

    def sink(request: InboundRequest) -> None:
        with arrived:
            delivered.append(request)
            arrived.notify_all()

    link = WorkerLink(
        broker_settings,
        worker_id="link-test",
        topics=TOPICS,
        share_group="g",
        served={"echo": [1]},
        receive_maximum=4,
        sink=sink,
        on_unroutable=lambda message: None,
        status_payload=lambda state: state.encode(),
    )
    link.start()
    try:
        for i in range(30):
            requester.send("echo", 1, b"frame-%d" % i, f"r{i}")
        with arrived:
            assert arrived.wait_for(lambda: len(delivered) >= 4, 5)
            # Nothing beyond the window may come while nothing is acknowledged.
            assert not arrived.wait_for(lambda: len(delivered) > 4, 0.5), (
                "the broker must stop at the advertised ReceiveMaximum"
            )
        acked = 0
        while acked < 30:
            with arrived:
                more = arrived.wait_for(lambda done=acked: len(delivered) > done, 10)  # type: ignore[misc]
                assert more, f"only {acked} of 30 delivered"
                batch = delivered[acked:]
            for request in batch:
                link.ack(request)
            acked += len(batch)
        assert sorted(r.payload for r in delivered) == sorted(b"frame-%d" % i for i in range(30))
        # The reply goes one level below the device's inbox: the worker's own level.
        reply_topic = TOPICS.result(requester.device_id, "link-test")
        assert all(r.key == ("echo", 1) and r.response_topic == reply_topic for r in delivered)
        assert {r.correlation_data for r in delivered} == {f"r{i}".encode() for i in range(30)}
    finally:
        link.stop()


class PacedEchoRunner(EchoTailRunner):
    """Echo runner that takes `batch_s` per batch, so requests queue up behind it."""

    def __init__(self, batch_s: float) -> None:
        super().__init__([echo_model_info()])
        self.batch_s = batch_s

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        time.sleep(self.batch_s)
        return super().run_batch(model, split, frames)


def test_a_worker_leaving_mid_stream_answers_what_it_took(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    """One of two workers stops while requests stream in: it leaves the share group, answers
    its backlog, and every request still gets exactly one result."""
    configs = [
        worker_config(
            broker_settings,
            worker_id=f"w{i}",
            models=[{"name": "echo"}],
            runner="echo",
            max_batch=2,
        )
        for i in range(2)
    ]
    ids = [f"m{i}" for i in range(300)]
    leaving = EdgeWorker(configs[0], PacedEchoRunner(0.002)).start()
    with EdgeWorker(configs[1], PacedEchoRunner(0.002)):
        stopper = threading.Thread(target=leaving.stop)
        for i, rid in enumerate(ids):
            requester.send("echo", 1, echo_frame(rid), rid)
            if i == 150:
                stopper.start()
            time.sleep(0.0005)
        stopper.join(10)
        after = [f"after{i}" for i in range(50)]
        for rid in after:
            requester.send("echo", 1, echo_frame(rid), rid)
        results = requester.wait(ids, timeout_s=30)
        late = requester.wait(after, timeout_s=30)
    leaving.wait_stopped(10)
    assert {r.request_id for r in results} == set(ids)
    assert len(requester.correlations) == len(ids) + len(after)  # none answered twice
    statuses = {r.status for r in results}
    assert statuses <= {"ok", "rejected"}
    # Whatever order the broker shares requests in, w0 took some before it left and none of
    # those sent after it had left.
    assert "w0" in {r.worker_id for r in results[:150]}
    assert {r.worker_id for r in late} == {"w1"}, "w0 left the share group"


def test_a_killed_worker_process_leaves_its_last_will(broker_settings: BrokerSettings) -> None:
    """`edge-worker` as a real process: "online" while it runs, "offline" (the broker's
    last will) once it is killed without a chance to say goodbye."""
    config = worker_config(
        broker_settings, worker_id="doomed", models=[{"name": "echo"}], runner="echo"
    )
    with worker_popen(config, quiet=False, stdout=subprocess.DEVNULL) as process:

        def online(payload: bytes) -> bool:
            return bool(payload) and parse_status(payload).state == "online"

        seen = wait_for_retained(broker_settings, TOPICS.status("doomed"), online, 60)
        assert seen and online(seen[-1]), "the worker process never came online"
        process.kill()
        process.wait(10)

    def offline(payload: bytes) -> bool:
        return bool(payload) and parse_status(payload).state == "offline"

    seen = wait_for_retained(broker_settings, TOPICS.status("doomed"), offline, 10)
    assert seen and offline(seen[-1]), "no last will after the worker was killed"
