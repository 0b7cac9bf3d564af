"""The device node and the site's frame limit, against a real Mosquitto and a real worker: a
frame over the device's own limit is never sent and its request runs here; a frame the broker
refuses (its limit below the device's) ends its request at the PUBACK, not at the deadline.
Either way the request ends with exactly one record, computed here."""

from __future__ import annotations

import time

import pytest
import torch

from broker.launcher import MosquittoBroker
from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.node import DeviceNode
from device_node.records import Fallback, ResultRecord
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import PACKET_TOO_LARGE, BrokerSettings
from schemas.frame import DEFAULT_MAX_FRAME_BYTES, encode_frame
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.policy import FixedSplit
from splitting.torch_blocks import TorchBlocks
from tests.support.scaled_model import TINY, TINY_SPLIT, tiny_model, worker_config

pytestmark = pytest.mark.integration

DEADLINE_MS = 10_000.0


def frame_bytes(model: SplitModel) -> int:
    """The size of a lossless frame of the tiny model's split, give or take its header."""
    z = model.run_blocks(model.preprocess(model.prepare_image(sample_images()[0][1])), 0, 2)
    return len(
        encode_frame(
            z[0].numpy(), codec="lossless", request_id="r", model=TINY, fingerprint="f", split=2
        )
    )


def device(settings: BrokerSettings, model: SplitModel, max_frame_bytes: int) -> DeviceNode:
    config = DeviceConfig(
        broker=settings,
        device_id="limit-dev",
        model=TINY,
        codec="lossless",
        policy=FixedPolicyConfig(split=TINY_SPLIT),
        deadline_ms=DEADLINE_MS,
        max_frame_bytes=max_frame_bytes,
    )
    return DeviceNode(config, TorchBlocks(model), FixedSplit(TINY_SPLIT))


def run_once(settings: BrokerSettings, max_frame_bytes: int) -> tuple[ResultRecord, int, int]:
    """One request of a device with `max_frame_bytes`; its record, the worker's served count
    and how many requests the link still waits for."""
    model = tiny_model()
    runner = ModelTailRunner({TINY: model}, {TINY: [TINY_SPLIT]})
    worker = EdgeWorker(worker_config(settings), runner)
    with worker, device(settings, model, max_frame_bytes) as node:
        assert node.link.wait_for_worker(TINY, TINY_SPLIT, 10)
        record = node.run_request(sample_images()[0][1])
        waiting = len(node.link._pending)
        time.sleep(0.2)  # room for a reply that should never come
        served = worker.stats.snapshot().served
        assert node.link.connected
    x = model.preprocess(model.prepare_image(sample_images()[0][1]))
    assert record.top1.index == int(torch.argmax(model.forward(x)))
    return record, served, waiting


def test_a_frame_over_the_devices_limit_is_never_sent(broker_settings: BrokerSettings) -> None:
    size = frame_bytes(tiny_model())
    record, served, waiting = run_once(broker_settings, max_frame_bytes=size // 2)
    assert (record.offloaded, record.fallback, record.bytes_sent) == (
        False,
        Fallback.OVERSIZED,
        0,
    )
    assert f"limit of {size // 2}" in record.fallback_detail
    assert (served, waiting) == (0, 0)


def test_a_frame_at_the_devices_limit_is_served(broker_settings: BrokerSettings) -> None:
    size = frame_bytes(tiny_model())
    # The header's request id and timestamps vary a little from this estimate.
    record, served, _ = run_once(broker_settings, max_frame_bytes=size + 512)
    assert record.offloaded and record.fallback is None and served == 1


def test_a_publish_the_broker_refuses_ends_its_request_at_once() -> None:
    size = frame_bytes(tiny_model())
    # The broker's limit is below the frame, the device's (the default) above it.
    with MosquittoBroker(max_frame_bytes=size // 2) as strict:
        settings = BrokerSettings(host=strict.host, port=strict.port)
        record, served, waiting = run_once(settings, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES)
    assert (record.offloaded, record.fallback) == (False, Fallback.REFUSED)
    assert record.fallback_detail == str(PACKET_TOO_LARGE)
    assert record.bytes_sent > size // 2
    assert record.total_ms < DEADLINE_MS / 10  # ended at the PUBACK, not the deadline
    assert (served, waiting) == (0, 0)
