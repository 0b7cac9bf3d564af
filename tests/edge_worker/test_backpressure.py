"""Backpressure with a real Mosquitto, a real worker and real device nodes: over its bound the
worker answers "rejected" and the device computes locally; a request that outlives its deadline
in the queue is skipped, answered "expired" and counted, and the device computes it locally.
Every request ends with exactly one record."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import numpy as np
import pytest
import torch

from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.node import DeviceNode
from device_node.records import Fallback, ResultRecord
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.policy import FixedSplit
from splitting.torch_blocks import TorchBlocks
from tests.support.scaled_model import TINY, TINY_SPLIT, GatedRunner, tiny_model, worker_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def device(
    settings: BrokerSettings, model: SplitModel, name: str, deadline_ms: float
) -> DeviceNode:
    config = DeviceConfig(
        broker=settings,
        device_id=name,
        model=TINY,
        codec="lossless",
        policy=FixedPolicyConfig(split=TINY_SPLIT),
        deadline_ms=deadline_ms,
    )
    return DeviceNode(config, TorchBlocks(model), FixedSplit(TINY_SPLIT))


@pytest.fixture
def image() -> np.ndarray:
    return sample_images()[0][1]


def local_top1(model: SplitModel, image: np.ndarray) -> int:
    with torch.inference_mode():
        return int(torch.argmax(model.forward(model.preprocess(model.prepare_image(image)))))


class Sender:
    """Runs one device's request in a thread and keeps every record it returns."""

    def __init__(self, node: DeviceNode, image: np.ndarray) -> None:
        self.records: list[ResultRecord] = []
        self.thread = threading.Thread(target=lambda: self.records.append(node.run_request(image)))
        self.thread.start()

    def join(self) -> list[ResultRecord]:
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.records


def test_over_its_bound_a_worker_rejects_and_the_device_computes_locally(
    broker_settings: BrokerSettings, image: np.ndarray
) -> None:
    model = tiny_model()
    runner = GatedRunner(model)
    # One request is always admitted; a second one queued would pass 1 byte.
    config = worker_config(broker_settings, max_held_bytes=1, max_batch=8)
    with ExitStack() as stack:
        worker = stack.enter_context(EdgeWorker(config, runner))
        nodes = [
            stack.enter_context(device(broker_settings, model, f"bp-{i}", deadline_ms=20_000))
            for i in range(4)
        ]
        for node in nodes:
            assert node.link.wait_for_worker(TINY, TINY_SPLIT, 10)
        computing = Sender(nodes[0], image)
        assert runner.entered.wait(10)
        queued = Sender(nodes[1], image)
        wait_until(lambda: len(worker.queue) == 1, 10, "the second request to be queued")
        refused = [Sender(node, image) for node in nodes[2:]]
        refused_records = [s.join() for s in refused]  # answered while the worker is busy
        runner.release.set()
        served_records = [computing.join(), queued.join()]
        snapshot = worker.stats.snapshot()
    assert all(len(records) == 1 for records in [*refused_records, *served_records])
    for (record,) in refused_records:
        assert record.offloaded is False and record.fallback == Fallback.REJECTED
        assert record.top1.index == local_top1(model, image)
    for (record,) in served_records:
        assert record.offloaded is True and record.fallback is None
    assert snapshot.rejected == 2 and snapshot.served == 2
    assert snapshot.splits[TINY][TINY_SPLIT].rejected == 2


def test_an_expired_request_is_skipped_counted_and_computed_on_the_device(
    broker_settings: BrokerSettings, image: np.ndarray
) -> None:
    model = tiny_model()
    runner = GatedRunner(model)
    with ExitStack() as stack:
        worker = stack.enter_context(EdgeWorker(worker_config(broker_settings), runner))
        patient = stack.enter_context(device(broker_settings, model, "patient", 20_000))
        hasty = stack.enter_context(device(broker_settings, model, "hasty", 300))
        for node in (patient, hasty):
            assert node.link.wait_for_worker(TINY, TINY_SPLIT, 10)
        first = Sender(patient, image)
        assert runner.entered.wait(10)
        late = Sender(hasty, image)
        (late_record,) = late.join()  # the device stopped waiting at its 300 ms deadline
        assert late_record.fallback == Fallback.TIMEOUT
        wait_until(lambda: len(worker.queue) == 1, 10, "the late request to stay queued")
        runner.release.set()
        (first_record,) = first.join()
        wait_until(lambda: worker.stats.snapshot().expired == 1, 10, "the expiry to be counted")
        snapshot = worker.stats.snapshot()
    assert first_record.offloaded is True
    assert late_record.offloaded is False and late_record.top1.index == local_top1(model, image)
    assert runner.batches == [1]  # the expired request was never computed
    assert snapshot.splits[TINY][TINY_SPLIT].expired == 1 and snapshot.served == 1
