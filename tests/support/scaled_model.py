"""A small real split model for the runtime tests: conv -> scale -> pool -> linear.

Its scale block sets the magnitude of block 1's output, so a frame can be made to overflow
fp16, which no ImageNet model here does on a real photo.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import nn

from edge_worker.config import WorkerConfig
from edge_worker.runner import ModelTailRunner
from mqtt_session.client import BrokerSettings
from schemas.frame import Frame
from schemas.messages import Prediction
from splitting.partition import SplitModel

TINY = "scaled-tiny"
TINY_SPLIT = 2  # the output of the scale block: (8, 8, 8)


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def tiny_model(scale: float = 1.0) -> SplitModel:
    """conv -> scale -> pool -> linear on 32x32 images; `scale` sets block 1's magnitude."""
    torch.manual_seed(0)
    blocks = [
        ("conv", nn.Conv2d(3, 8, 3, stride=4, padding=1)),
        ("scale", Scale(scale)),
        ("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
        ("fc", nn.Linear(8, 10)),
    ]
    module = nn.Sequential(*(block for _, block in blocks))
    labels = [f"class-{i}" for i in range(10)]
    return SplitModel(TINY, module, blocks, input_size=32, labels=labels)


def worker_config(settings: BrokerSettings, **overrides: object) -> WorkerConfig:
    values: dict[str, object] = {
        "broker": settings,
        "worker_id": "isolation-worker",
        "models": [{"name": TINY}],
        "device": "cpu",
        "telemetry_interval_s": 0.5,
    }
    values.update(overrides)
    return WorkerConfig.model_validate(values)


class GatedRunner(ModelTailRunner):
    """The real tail, whose first batch waits for `release` (so the worker stays busy while
    more requests arrive)."""

    def __init__(self, model: SplitModel) -> None:
        super().__init__({TINY: model}, {TINY: [TINY_SPLIT]})
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        if not self.batches:
            self.entered.set()
            assert self.release.wait(30), "the test never released the first batch"
        self.batches.append(len(frames))
        return super().run_batch(model, split, frames)
