"""The device says under which prepare recipe (FORMAT.md 11.2) it made a split-0 image, in the
request's `splitmq-prepare` property, from its own model build; a real worker serves a request
of its own recipe and answers `prepare_mismatch` to another one."""

from __future__ import annotations

import pytest

from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.node import DeviceNode
from device_node.records import Fallback, ResultRecord
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitting.images import sample_images
from splitting.pixels import RECIPE_VERSION
from splitting.policy import FixedSplit
from splitting.torch_blocks import TorchBlocks
from tests.support.scaled_model import TINY, TINY_SPLIT, tiny_model, worker_config

pytestmark = pytest.mark.integration


class OtherRecipe(TorchBlocks):
    """A build whose images claim another recipe version than this project's."""

    @property
    def prepare_recipe(self) -> int:
        return RECIPE_VERSION + 1


def one_request(settings: BrokerSettings, blocks: TorchBlocks, split: int) -> ResultRecord:
    runner = ModelTailRunner({TINY: blocks.model}, {TINY: [0, TINY_SPLIT]})
    config = DeviceConfig(
        broker=settings,
        device_id="recipe-dev",
        model=TINY,
        codec="lossless",
        policy=FixedPolicyConfig(split=split),
        deadline_ms=10_000.0,
    )
    worker = EdgeWorker(worker_config(settings), runner)
    with worker, DeviceNode(config, blocks, FixedSplit(split)) as node:
        assert node.link.wait_for_worker(TINY, split, 10)
        return node.run_request(sample_images()[0][1])


def test_a_split_0_request_of_the_workers_recipe_is_served(
    broker_settings: BrokerSettings,
) -> None:
    blocks = TorchBlocks(tiny_model())
    assert blocks.prepare_recipe == RECIPE_VERSION
    record = one_request(broker_settings, blocks, 0)
    assert record.offloaded and record.fallback is None


def test_a_split_0_request_of_another_recipe_is_answered_prepare_mismatch(
    broker_settings: BrokerSettings,
) -> None:
    record = one_request(broker_settings, OtherRecipe(tiny_model()), 0)
    assert (record.offloaded, record.fallback) == (False, Fallback.ERROR_REPLY)
    assert record.fallback_detail == "prepare_mismatch"


def test_a_later_split_carries_no_recipe(broker_settings: BrokerSettings) -> None:
    # Its tensor is the device's own head output: the worker prepares nothing from it.
    record = one_request(broker_settings, OtherRecipe(tiny_model()), TINY_SPLIT)
    assert record.offloaded and record.fallback is None
