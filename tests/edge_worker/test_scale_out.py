"""Scale-out on standard MQTT: workers share a split through `$share`, a worker may serve only
some splits, and the device can prefer the less loaded of several live workers."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pytest
import torch

from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.node import DeviceNode
from device_node.workers import WorkerView, expected_wait_ms, least_loaded
from edge_worker.config import WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import encode_frame
from schemas.messages import TelemetryMessage
from schemas.topics import Topics
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.policy import FixedSplit
from splitting.torch_blocks import TorchBlocks
from tests.support.scaled_model import TINY, TINY_SPLIT, GatedRunner, tiny_model
from tests.support.scaled_model import worker_config as tiny_worker_config
from tests.support.waiting import wait_until
from tests.support.worker_clients import Requester, echo_frame, worker_config

TOPICS = Topics()


def worker_config_tiny(settings: BrokerSettings, *, worker_id: str) -> WorkerConfig:
    return tiny_worker_config(settings, worker_id=worker_id, homeassistant={"enabled": False})


def device_node(settings: BrokerSettings, model: SplitModel) -> DeviceNode:
    config = DeviceConfig(
        broker=settings,
        device_id="chooser-device",
        model=TINY,
        codec="lossless",
        policy=FixedPolicyConfig(split=TINY_SPLIT),
        deadline_ms=20_000.0,
    )
    return DeviceNode(config, TorchBlocks(model), FixedSplit(TINY_SPLIT))


def lossless_tiny_frame(model: SplitModel, image: np.ndarray) -> bytes:
    with torch.inference_mode():
        z = model.head(model.preprocess(model.prepare_image(image)), TINY_SPLIT)
    return encode_frame(
        z[0].numpy(),
        codec="lossless",
        request_id="load",
        model=model.name,
        fingerprint=model.fingerprint,
        split=TINY_SPLIT,
    )


@pytest.mark.integration
def test_two_workers_share_a_split_and_one_serves_only_a_subset(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    both = worker_config(
        broker_settings, worker_id="both", models=[{"name": "echo"}], runner="echo"
    )
    subset = worker_config(
        broker_settings,
        worker_id="only-0",
        models=[{"name": "echo", "splits": [0]}],
        runner="echo",
    )
    with EdgeWorker(both), EdgeWorker(subset) as narrow:
        assert narrow.link.subscriptions == [
            "$share/splitmq-workers/splitmq/req/echo/0/+",
            "splitmq/req/echo/0/+/only-0",
        ], "a worker subscribes to the splits it serves, no others"
        shared = [f"shared-{i}" for i in range(40)]
        alone = [f"alone-{i}" for i in range(20)]
        for rid in shared:
            requester.send("echo", 0, echo_frame(rid, split=0), rid)
        for rid in alone:
            requester.send("echo", 1, echo_frame(rid, split=1), rid)
        shared_results = requester.wait(shared)
        alone_results = requester.wait(alone)
    assert all(r.status == "ok" for r in [*shared_results, *alone_results])
    assert {r.worker_id for r in shared_results} == {"both", "only-0"}, "split 0 is shared"
    assert {r.worker_id for r in alone_results} == {"both"}, "only one worker serves split 1"
    assert len(requester.correlations) == len(shared) + len(alone)  # each answered once


@pytest.mark.integration
def test_the_device_sends_to_the_less_loaded_of_two_live_workers(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    model = tiny_model()
    busy_runner = GatedRunner(model)
    busy = worker_config_tiny(broker_settings, worker_id="busy")
    idle = worker_config_tiny(broker_settings, worker_id="idle")
    _, image = sample_images()[0]
    frame = lossless_tiny_frame(model, image)
    with ExitStack() as stack:
        busy_worker = stack.enter_context(EdgeWorker(busy, busy_runner))
        stack.enter_context(EdgeWorker(idle, ModelTailRunner({TINY: model}, {TINY: [TINY_SPLIT]})))
        # Load one worker through its own topic: one request computing, three waiting.
        for i in range(4):
            props_topic = TOPICS.request_direct(TINY, TINY_SPLIT, requester.device_id, "busy")
            requester.client.publish(props_topic, frame, qos=1)
            if i == 0:
                assert busy_runner.entered.wait(10)
        wait_until(lambda: len(busy_worker.queue) == 3, 10, "three requests queued at busy")
        node = stack.enter_context(device_node(broker_settings, model))

        def sees_both_loads() -> bool:
            views = node.link.workers()
            busy_view, idle_view = views.get("busy"), views.get("idle")
            return bool(
                busy_view and busy_view.telemetry and busy_view.telemetry.queue_depth == 3
                and idle_view and idle_view.telemetry
            )  # fmt: skip

        assert node.link.wait_for_workers(sees_both_loads, 10)
        assert node.link.least_loaded_worker(TINY, TINY_SPLIT) == "idle"
        records = [node.run_request(image) for _ in range(3)]
        busy_runner.release.set()
    assert [r.worker_id for r in records] == ["idle"] * 3
    assert all(r.offloaded for r in records)


def view(worker_id: str, *, queue_depth: int, direct: bool = True) -> WorkerView:
    telemetry = TelemetryMessage(
        worker_id=worker_id, ts=1.0, seq=1, interval_s=1.0, device="cpu", models={"m": [3]},
        queue_depth=queue_depth, queue_capacity=8, in_flight=0, batch_size=2.0, max_batch=8,
        utilization=0.0, service_ms={"m": {3: 10.0}}, served=0, rejected=0, expired=0, errors=0,
        direct=direct,
    )  # fmt: skip
    return WorkerView(worker_id, telemetry=telemetry, telemetry_at=0.0, online=True)


def test_least_loaded_needs_two_direct_workers_that_differ() -> None:
    assert least_loaded([view("a", queue_depth=4), view("b", queue_depth=1)], "m", 3) == "b"
    assert expected_wait_ms(view("a", queue_depth=4).telemetry, "m", 3) == 20.0  # type: ignore[arg-type]
    assert least_loaded([view("a", queue_depth=2), view("b", queue_depth=2)], "m", 3) is None
    assert least_loaded([view("a", queue_depth=4)], "m", 3) is None
    older = view("b", queue_depth=0, direct=False)  # a worker without its own topic
    assert least_loaded([view("a", queue_depth=4), older], "m", 3) is None
