"""What a local run of the whole system is: its options, and the worker's and each device's
configuration built from them as objects.

Shared by the demo (`splitmq.demo`) and the live-versus-simulated benchmark
(`splitmq.bench.live`), which must run the very same configurations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from device_node.config import (
    DeviceConfig,
    DynamicPolicyConfig,
    FixedPolicyConfig,
    PolicyConfig,
)
from edge_worker.config import ModelEntry, WorkerConfig
from mqtt_session.client import BrokerSettings
from splitmq_base.errors import SplitmqError

DEFAULT_MODEL = "efficientnet-lite0"
# The demo's devices emulate a device 4x slower than this host (the live benchmark's default): with
# the devices as fast as the worker's host, running everything locally usually wins.
DEFAULT_SLOWDOWN = 4.0


class DemoError(SplitmqError):
    """The demo could not start (no worker became visible, a device could not connect, ...)."""


@dataclass(frozen=True)
class DemoOptions:
    """What `splitmq demo` runs. `requests` is per device."""

    devices: int = 2
    requests: int = 20
    split: int | None = None
    policy: str = "dynamic"
    codec: str = "int5"
    model: str = DEFAULT_MODEL
    trace: Path | None = None
    deadline_ms: float = 5000.0
    rate_hz: float | None = None
    slowdown: float = DEFAULT_SLOWDOWN
    max_batch: int = 8
    #: One intra-op thread: the devices' profiles are measured on one core, and devices and
    #: worker each running a team of threads on a small host slow each other down.
    torch_threads: int | None = 1
    worker_wait_s: float = 30.0
    warm_up: bool = True
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.devices < 1 or self.requests < 0:
            raise DemoError("the demo needs at least one device and a request count >= 0")
        if self.policy == "dynamic" and self.split is not None:
            raise DemoError("--split fixes the split; it does not combine with --policy dynamic")


def worker_config(options: DemoOptions, settings: BrokerSettings) -> WorkerConfig:
    return WorkerConfig(
        broker=settings,
        worker_id="edge-1",
        models=[ModelEntry(name=options.model)],
        device="cpu",
        max_batch=options.max_batch,
        torch_threads=options.torch_threads,
    )


def device_config(options: DemoOptions, index: int, settings: BrokerSettings) -> DeviceConfig:
    policy: PolicyConfig = (
        FixedPolicyConfig(split=options.split)
        if options.policy == "fixed"
        else DynamicPolicyConfig()
    )
    return DeviceConfig(
        broker=settings,
        device_id=f"dev{index}",
        model=options.model,
        codec=options.codec,
        policy=policy,
        deadline_ms=options.deadline_ms,
        slowdown=options.slowdown,
        trace=options.trace,
    )
