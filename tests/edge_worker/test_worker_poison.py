"""A poison request hurts only itself: mixed into a batch with good requests, against a real
Mosquitto and worker, every poison request gets its own error code and every good one is
served."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import pytest

from edge_worker.runner import EchoTailRunner, echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import Frame
from schemas.messages import Prediction
from tests.support.poison import POISON, good_frame
from tests.support.scaled_model import worker_config
from tests.support.worker_clients import Requester, SlowFirstRunner

pytestmark = pytest.mark.integration


def test_poison_requests_in_one_batch_are_refused_alone(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    runner = SlowFirstRunner(delay_s=0.5)
    config = worker_config(broker_settings, models=[{"name": "echo"}], max_batch=64)
    with EdgeWorker(config, runner) as worker:
        requester.send("echo", 1, good_frame("first"), "first")
        time.sleep(0.2)  # "first" is computing: what follows queues up and batches together
        good: list[str] = []
        for i, (name, (build, _)) in enumerate(POISON.items()):
            requester.send("echo", 1, build(name), name)
            good.append(f"good-{i}")
            requester.send("echo", 1, good_frame(good[-1]), good[-1])
        results = dict(zip(POISON, requester.wait(list(POISON), timeout_s=20), strict=True))
        served = requester.wait(["first", *good], timeout_s=20)
        assert all(result.status == "ok" and len(result.top5) == 5 for result in served)
        codes = {name: (r.status, r.error.code if r.error else None) for name, r in results.items()}
        assert codes == {name: ("error", code) for name, (_, code) in POISON.items()}
        assert max(len(runner.computed) - 1, 0) >= len(good)  # the good ones were computed
        assert worker.stats.snapshot().errors == len(POISON)


class NanScoreRunner(EchoTailRunner):
    """Echo runner that answers a NaN score for request ids starting with "nan": a reply that
    cannot be built."""

    def __init__(self) -> None:
        super().__init__([echo_model_info()])

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        top5 = super().run_batch(model, split, frames)
        return [
            [p.model_copy(update={"score": math.nan}) for p in row]
            if frame.header.request_id.startswith("nan")
            else row
            for frame, row in zip(frames, top5, strict=True)
        ]


def test_a_reply_that_cannot_be_built_ends_that_request_alone(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    config = worker_config(
        broker_settings, models=[{"name": "echo"}], max_batch=16, max_wait_ms=300.0
    )
    with EdgeWorker(config, NanScoreRunner()):
        ids = ["ok-0", "nan-0", "ok-1", "nan-1", "ok-2"]
        for rid in ids:
            requester.send("echo", 1, good_frame(rid), rid)
        results = dict(zip(ids, requester.wait(ids, timeout_s=20), strict=True))
    for rid, result in results.items():
        if rid.startswith("nan"):
            assert result.status == "error" and result.error is not None
            assert result.error.code == "internal"
        else:
            assert result.status == "ok" and len(result.top5) == 5
