"""A device on the onnxruntime backend: its exported build runs the heads and the local runs,
a PyTorch worker completes its requests, and the answers are the unsplit model's. It finds its
build by model name, and says plainly when there is none or more than one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.runtime import build_device, load_device_model, policy_context
from device_node.sources import SourceImage, sample_source_images
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitting.onnx_blocks import MissingBuildError, OnnxBlocks, find_build
from splitting.partition import SplitModel
from splitting.policy import FixedSplit
from splitting.registry import load_model

MODEL = "efficientnet-lite0"
SPLIT = 13


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    return load_model(MODEL)


def onnx_device(broker: BrokerSettings, export: Path, **changes: object) -> DeviceConfig:
    return DeviceConfig(
        broker=broker,
        device_id="onnx-dev",
        model=MODEL,
        backend="onnxruntime",
        export_dir=export.parent,
        policy=FixedPolicyConfig(split=SPLIT),
        deadline_ms=5000.0,
        torch_threads=1,
        **changes,
    )


def torch_top1(model: SplitModel, image: SourceImage) -> int:
    x = model.preprocess(model.prepare_image(image.pixels))
    return int(model.forward(x).argmax())


@pytest.mark.integration
def test_an_onnxruntime_device_offloads_and_runs_locally_with_the_models_answers(
    broker_settings: BrokerSettings, lite0: SplitModel, lite0_export: Path
) -> None:
    config = onnx_device(broker_settings, lite0_export)
    blocks = load_device_model(config)
    assert isinstance(blocks, OnnxBlocks) and blocks.fingerprint == lite0.fingerprint
    worker = WorkerConfig(
        broker=broker_settings, worker_id="torch-w", models=[ModelEntry(name=MODEL)], device="cpu"
    )
    photos = sample_source_images()[:4]
    runner = ModelTailRunner({MODEL: lite0}, {MODEL: [SPLIT]})
    with EdgeWorker(worker, runner):
        for split in (SPLIT, lite0.n):
            with build_device(config, model=blocks, policy=FixedSplit(split)) as node:
                assert node.link.wait_for_worker(MODEL, SPLIT, 10.0)
                records = [node.run_request(photo) for photo in photos]
            assert all(r.offloaded == (split == SPLIT) for r in records)
            assert [r.top1.index for r in records] == [torch_top1(lite0, p) for p in photos]


def test_the_device_profile_of_an_exported_build_is_measured_on_it(
    lite0_export: Path, tmp_path: Path
) -> None:
    config = onnx_device(BrokerSettings(), lite0_export, codecs=["int8"], codec="int8")
    blocks = load_device_model(config)
    profile = policy_context(config, blocks, cache_dir=tmp_path).profile()
    assert (profile.backend, profile.fingerprint) == ("onnxruntime", blocks.fingerprint)
    assert profile.backend_version and profile.device_ms_at(blocks.n) > 0
    # Its own agreement, not the shipped PyTorch figures: measured on its 8 profile images.
    assert profile.images == 8
    assert all(0.0 <= a <= 1.0 for s in profile.splits for a in s.agreement.values())


def test_a_device_without_a_build_is_told_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(MissingBuildError, match="splitmq export --model efficientnet-lite0"):
        find_build(tmp_path, MODEL)


def test_a_device_with_two_builds_must_name_one(lite0_export: Path, tmp_path: Path) -> None:
    shutil.copytree(lite0_export, tmp_path / lite0_export.name)
    shutil.copytree(lite0_export, tmp_path / f"{MODEL}-0123456789abcdef")
    with pytest.raises(MissingBuildError, match="set build:"):
        find_build(tmp_path, MODEL)
    fingerprint = lite0_export.name.removeprefix(f"{MODEL}-")
    assert find_build(tmp_path, MODEL, fingerprint) == tmp_path / lite0_export.name
