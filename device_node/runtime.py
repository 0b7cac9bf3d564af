"""Assembling a device node from its configuration: model, policy, link (and its shaper)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from device_node.config import DeviceConfig
from device_node.errors import ModelMismatchError
from device_node.node import DeviceNode
from device_node.policies import PolicyContext, build_policy
from splitting.blocks import Blocks
from splitting.model_files import build_dir, wire_name
from splitting.onnx_blocks import MissingBuildError, OnnxBlocks, find_build

if TYPE_CHECKING:
    from splitting.partition import SplitModel
from splitting.policy import SplitPolicy
from splitting.profiles import ModelProfile
from splitting.profiling import load_or_profile, retimed
from splitting.reference import with_reference_agreement

if TYPE_CHECKING:
    from splitting.partition import SplitModel


def load_device_model(config: DeviceConfig) -> Blocks:
    """The device's model on its configured backend; onnxruntime loads no torch unless this
    device has no exported build yet and torch is there to export one."""
    if config.backend == "onnxruntime" or build_dir(config.model) is not None:
        return OnnxBlocks(exported_build(config), threads=config.torch_threads or 1)
    import torch

    from splitting.torch_blocks import TorchBlocks

    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    return TorchBlocks(_torch_model(config))


def exported_build(config: DeviceConfig) -> Path:
    given = build_dir(config.model)  # `model:` names the build directory itself
    if given is not None:
        return given
    try:
        return find_build(config.export_dir, wire_name(config.model), config.build)
    except MissingBuildError:
        if config.build is not None or importlib.util.find_spec("torch") is None:
            raise
    from splitting.onnx_export import ensure_exported

    return ensure_exported(_torch_model(config), config.export_dir)


def _torch_model(config: DeviceConfig) -> SplitModel:
    from splitting.registry import load_model

    return load_model(config.model, weights=config.weights)


def device_profile(config: DeviceConfig, model: Blocks, cache_dir: Path | None) -> ModelProfile:
    """An exported build's own profile, timed on this device (no images needed); else this
    device's measurement, cached per model fingerprint and host (seconds, a cache hit none)."""
    if isinstance(model, OnnxBlocks):
        built = model.build_profile()
        wanted = {config.codec, *config.codecs}
        if built and wanted <= set(built.codecs) and built.jpeg_quality == config.jpeg_quality:
            timed = retimed(built, model, threads=model.threads or 1)
            return timed.with_codec(config.codec, config.input_codec)
    measured = load_or_profile(
        model,
        cache_dir,
        codec=config.codec,
        input_codec=config.input_codec,
        jpeg_quality=config.jpeg_quality,
    )
    # Agreement is the model's, not the host's: the shipped profile measured it on more
    # real images than a device profiles at start-up.
    return with_reference_agreement(measured)


def policy_context(
    config: DeviceConfig, model: Blocks, *, cache_dir: Path | None = None
) -> PolicyContext:
    @cache
    def profile() -> ModelProfile:
        return device_profile(config, model, cache_dir)

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
    model: Blocks | None = None,
    policy: SplitPolicy | None = None,
    cache_dir: Path | None = None,
) -> DeviceNode:
    """A DeviceNode (not started) for `config`; `model` lets several devices share weights."""
    model = model or load_device_model(config)
    if model.name != wire_name(config.model):
        raise ModelMismatchError(
            f"device {config.device_id} wants {wire_name(config.model)}, given {model.name}"
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
