"""The device node, against a real Mosquitto and a real worker:
`run_request` ends with exactly one record when its own encoder refuses the intermediate, or
when a worker's "ok" reply carries no predictions."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
import torch

from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.node import DeviceNode
from device_node.records import Fallback
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import Frame
from schemas.messages import Prediction
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.policy import Decision, FixedSplit
from splitting.torch_blocks import TorchBlocks
from tests.support.scaled_model import TINY, TINY_SPLIT, tiny_model, worker_config

pytestmark = pytest.mark.integration


# -- device: run_request ends with exactly one record whatever happens on the way --------------


def tiny_device(settings: BrokerSettings, model: SplitModel, codec: str) -> DeviceNode:
    config = DeviceConfig(
        broker=settings,
        device_id="refusal-dev",
        model=TINY,
        codec=codec,
        policy=FixedPolicyConfig(split=TINY_SPLIT),
        deadline_ms=10000.0,
    )
    return DeviceNode(config, TorchBlocks(model), FixedSplit(TINY_SPLIT))


def wait_for_worker(node: DeviceNode, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not node.link.alive_workers(TINY, TINY_SPLIT):
        assert time.monotonic() < deadline, "the worker never showed up"
        time.sleep(0.02)


def test_an_encoder_refusal_falls_back_to_one_local_record(
    broker_settings: BrokerSettings,
) -> None:
    model = tiny_model(scale=1e6)  # block 1's output is far beyond fp16's range
    runner = ModelTailRunner({TINY: model}, {TINY: [TINY_SPLIT]})
    _, image = sample_images()[0]
    worker = EdgeWorker(worker_config(broker_settings), runner)
    with worker, tiny_device(broker_settings, model, codec="fp16") as node:
        wait_for_worker(node)
        record = node.run_request(image)
    assert record.offloaded is False
    assert record.fallback == Fallback.ENCODE_ERROR and record.fallback_detail
    assert record.split == TINY_SPLIT and record.bytes_sent == 0
    x = model.preprocess(model.prepare_image(image))
    expected = int(torch.argmax(model.forward(x)))
    assert record.top1.index == expected
    assert worker.stats.snapshot().served == 0


class TensorCodecAtSplitZero(FixedSplit):
    """A policy that names a tensor codec for split 0, which sends the image."""

    def choose(self, now: float) -> Decision:
        return Decision(k=0, reason="fixed", codec="int8")


def test_a_policy_codec_that_cannot_send_the_image_is_refused_with_one_local_record(
    broker_settings: BrokerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_model()
    runner = ModelTailRunner({TINY: model}, {TINY: [0, TINY_SPLIT]})
    _, image = sample_images()[0]
    config = DeviceConfig(broker=broker_settings, device_id="codec-dev", model=TINY)
    worker = EdgeWorker(worker_config(broker_settings), runner)
    with worker, DeviceNode(config, TorchBlocks(model), TensorCodecAtSplitZero(0)) as node:
        wait_for_worker(node)
        record = node.run_request(image)
    assert (record.offloaded, record.fallback, record.bytes_sent) == (
        False,
        Fallback.ENCODE_ERROR,
        0,
    )
    assert "codec 'int8' for split 0" in caplog.text
    assert "codec 'int8' for split 0" in record.fallback_detail
    assert worker.stats.snapshot().served == 0


class EmptyOkRunner(ModelTailRunner):
    """A worker that answers "ok" with no predictions: valid on the wire, useless as a result."""

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        return [[] for _ in frames]


def test_an_ok_reply_without_predictions_falls_back_to_one_local_record(
    broker_settings: BrokerSettings,
) -> None:
    model = tiny_model()
    runner = EmptyOkRunner({TINY: model}, {TINY: [TINY_SPLIT]})
    _, image = sample_images()[0]
    worker = EdgeWorker(worker_config(broker_settings), runner)
    with worker, tiny_device(broker_settings, model, codec="lossless") as node:
        wait_for_worker(node)
        record = node.run_request(image)
    assert worker.stats.snapshot().served == 1  # the reply did come
    assert record.offloaded is False
    assert record.fallback == Fallback.BAD_REPLY
    assert len(record.top5) == 5
    x = model.preprocess(model.prepare_image(image))
    assert record.top1.index == int(torch.argmax(model.forward(x)))
