"""The bit-exact path: a request that asks for it runs alone on one thread and says so; batched
results say they are not exact. Real lite0 frames through a real Mosquitto and worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch

from edge_worker.batching import Queued, RequestQueue
from edge_worker.config import WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitmq.bench.light_device import LightDevice
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.registry import load_model
from tests.support.exact import SPLIT, lossless_frame, reference_scores

MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    return load_model(MODEL)


@pytest.fixture
def two_threads() -> Iterator[None]:
    """The worker's default path on two torch threads, so that only the exact path is exact."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.integration
def test_exact_requests_run_alone_and_match_the_unsplit_model_bit_for_bit(
    broker_settings: BrokerSettings, lite0: SplitModel, two_threads: None
) -> None:
    images = [lite0.prepare_image(image) for _, image in sample_images()[:8]]
    config = WorkerConfig.model_validate(
        {
            "broker": broker_settings,
            "worker_id": "exact-worker",
            "models": [{"name": MODEL}],
            "device": "cpu",
            "max_batch": 8,
            "max_wait_ms": 1000.0,  # the batched requests below gather into few batches
        }
    )
    runner = ModelTailRunner({MODEL: lite0}, {MODEL: [SPLIT]})
    batched_ids = [f"batched-{i}" for i in range(6)]
    exact_ids = ["exact-0", "exact-1"]
    frames = {rid: lossless_frame(lite0, images[i], rid) for i, rid in enumerate(batched_ids)}
    frames |= {rid: lossless_frame(lite0, images[6 + i], rid) for i, rid in enumerate(exact_ids)}
    device = LightDevice(broker_settings, "exact-device")
    topic = device.topics.request(MODEL, SPLIT, device.device_id)
    with EdgeWorker(config, runner):
        device.start()
        try:
            for rid in [*batched_ids[:3], exact_ids[0], *batched_ids[3:], exact_ids[1]]:
                device.send(topic, frames[rid], rid, exact=rid in exact_ids)
            assert device.wait([*batched_ids, *exact_ids], timeout_s=60)
        finally:
            device.stop()
    results = {rid: device.replies[rid].message for rid in [*batched_ids, *exact_ids]}
    assert all(r is not None and r.status == "ok" for r in results.values())
    for i, rid in enumerate(exact_ids):
        result = results[rid]
        assert result is not None and result.timings is not None
        assert result.exact and result.timings.batch_size == 1
        assert [p.score for p in result.top5] == reference_scores(lite0, images[6 + i])
    batched = [results[rid] for rid in batched_ids]
    assert not any(r is not None and r.exact for r in batched)
    assert max(r.timings.batch_size for r in batched if r and r.timings) > 1


def test_exact_requests_wait_in_their_own_lane_and_run_alone() -> None:
    now = time.monotonic()
    queue: RequestQueue[Queued] = RequestQueue(64, 10_000)
    for i, exact in enumerate([False, True, False, True, False]):
        queue.put(Queued(key=("m", 1), received=now + i * 1e-3, nbytes=1, exact=exact))
    sizes = []
    while len(queue):
        batch = queue.take_batch(8, 0.0, timeout_s=0)
        sizes.append((len(batch), {q.exact for q in batch}))
    # The oldest (batched) request gathers the other batched ones; each exact one runs alone.
    assert sizes == [(3, {False}), (1, {True}), (1, {True})]
    assert queue.pending_by_key() == {}
