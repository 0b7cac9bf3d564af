"""A client that knows only the broker, the catalog and FORMAT.md: it prepares photos with the
text-only recipe, sends them at split 0 in the exact codecs, and gets the unsplit model's very
top-5 from a real worker. A request that names another recipe version is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_worker.config import WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import encode_frame
from schemas.messages import ModelCatalogMessage
from splitmq.bench.light_device import LightDevice
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.registry import load_model
from tests.support.spec_prepare import load_vectors, spec_prepare
from tests.support.worker_clients import read_catalogs

pytestmark = pytest.mark.integration

MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    return load_model(MODEL)


def _photos() -> list[np.ndarray]:
    """Sample photos and the S = 224 conformance inputs (RGBA among them), as decoded."""
    vectors = [v.pixels for v in load_vectors()[1] if v.size == 224 and v.pixels.ndim == 3]
    return [image for _, image in sample_images()[:3]] + vectors


def _reference_top5(model: SplitModel, prepared: np.ndarray) -> list[tuple[int, float]]:
    """The unsplit model on the project's own pixels: batch 1, one thread (the reference)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            logits = model.forward(model.preprocess(prepared))
            top = torch.topk(torch.softmax(logits.float().flatten(1), dim=1), k=5, dim=1)
    finally:
        torch.set_num_threads(previous)
    return [(int(i), float(s)) for i, s in zip(top.indices[0], top.values[0], strict=True)]


def _frame(catalog: ModelCatalogMessage, photo: np.ndarray, codec: str, rid: str) -> bytes:
    recipe = catalog.prepare
    assert recipe.recipe_version == 2 and recipe.resize_to is not None
    return encode_frame(
        spec_prepare(photo, recipe.size, recipe.resize_to),
        codec=codec,
        request_id=rid,
        model=catalog.model,
        fingerprint=catalog.fingerprint,
        split=0,
    )


def test_a_client_preparing_from_the_text_gets_the_unsplit_models_top5_bit_for_bit(
    broker_settings: BrokerSettings, lite0: SplitModel
) -> None:
    photos = _photos()
    assert any(photo.shape[2] == 4 for photo in photos)
    config = WorkerConfig.model_validate(
        {
            "broker": broker_settings,
            "worker_id": "spec-worker",
            "models": [{"name": MODEL}],
            "device": "cpu",
            "max_batch": 4,
        }
    )
    device = LightDevice(broker_settings, "spec-device")
    topic = device.topics.request(MODEL, 0, device.device_id)
    with EdgeWorker(config, ModelTailRunner({MODEL: lite0}, {MODEL: [0]})):
        catalog = read_catalogs(broker_settings, {MODEL})[MODEL]
        frames = {
            f"{codec}-{i}": _frame(catalog, photo, codec, f"{codec}-{i}")
            for i, photo in enumerate(photos)
            for codec in ("lossless", "webp")
        }
        device.start()
        try:
            for rid, frame in frames.items():
                device.send(topic, frame, rid, exact=True, prepare_version="2")
            device.send(topic, frames["webp-0"], "old-recipe", prepare_version="1")
            assert device.wait([*frames, "old-recipe"], timeout_s=120)
        finally:
            device.stop()
    for i, photo in enumerate(photos):
        expected = _reference_top5(lite0, lite0.prepare_image(photo))
        for codec in ("lossless", "webp"):
            result = device.replies[f"{codec}-{i}"].message
            assert result is not None and result.status == "ok" and result.exact
            assert [(p.index, p.score) for p in result.top5] == expected, (codec, i)
    refused = device.replies["old-recipe"].message
    assert refused is not None and refused.status == "error" and refused.error is not None
    assert refused.error.code == "prepare_mismatch"
