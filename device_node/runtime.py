"""Assembling a device node from its configuration: model, policy, link (and its shaper)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from device_node.config import DeviceConfig
from device_node.errors import ModelMismatchError
from device_node.node import DeviceNode
from device_node.policies import PolicyContext, build_policy
from splitting.policy import SplitPolicy
from splitting.profiles import ModelProfile
from splitting.profiling import load_or_profile
from splitting.reference import with_reference_agreement
from splitting.torch_blocks import TorchBlocks


def load_device_model(config: DeviceConfig) -> TorchBlocks:
    import torch

    from splitting.registry import load_model

    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    return TorchBlocks(load_model(config.model, weights=config.weights))


def policy_context(
    config: DeviceConfig, model: TorchBlocks, *, cache_dir: Path | None = None
) -> PolicyContext:
    @cache
    def profile() -> ModelProfile:
        # Cached per model fingerprint and host: profiling takes seconds, a cache hit none.
        measured = load_or_profile(
            model.model,
            cache_dir,
            codec=config.codec,
            input_codec=config.input_codec,
            jpeg_quality=config.jpeg_quality,
        )
        # Agreement is the model's, not the host's: the shipped profile measured it on more
        # real images than a device profiles at start-up.
        return with_reference_agreement(measured)

    return PolicyContext(
        model_name=model.name,
        n=model.n,
        codec=config.codec,
        deadline_ms=config.deadline_ms,
        slowdown=config.slowdown,
        profile=profile,
        codecs=config.codecs,
        input_codec=config.input_codec,
        min_agreement=config.min_agreement,
        cores=config.cpu_cores,
    )


def build_device(
    config: DeviceConfig,
    *,
    model: TorchBlocks | None = None,
    policy: SplitPolicy | None = None,
    cache_dir: Path | None = None,
) -> DeviceNode:
    """A DeviceNode (not started) for `config`; `model` lets several devices share weights."""
    model = model or load_device_model(config)
    if model.name != config.model:
        raise ModelMismatchError(
            f"device {config.device_id} wants {config.model}, given {model.name}"
        )
    if policy is None:
        policy = build_policy(config.policy, policy_context(config, model, cache_dir=cache_dir))
    return DeviceNode(config, model, policy)


@contextlib.contextmanager
def shaped_uplink(config: DeviceConfig) -> Iterator[DeviceConfig]:
    """With `config.trace`, a trace-driven shaper between this device and its broker, and the
    config that connects through it; without a trace, the config unchanged."""
    if config.trace is None:
        yield config
        return
    # Emulation only: a production device without a trace never imports the shaper.
    from device_node.shaper import TraceShaper

    upstream = (config.broker.host, config.broker.port)
    with TraceShaper(config.trace, upstream) as shaper:
        host, port = shaper.address
        broker = config.broker.model_copy(update={"host": host, "port": port})
        yield config.model_copy(update={"broker": broker})
