"""What a simulation is built from: device and server profiles, traces and settings.

Shared by `splitmq bench chooser` and the live-versus-simulated comparison, so that both build
the simulator the same way (same link constants, same profiles).
"""

from __future__ import annotations

from pathlib import Path

from splitmq_base.errors import SplitmqError
from splitting.errors import SplittingError
from splitting.latency import DEFAULT_MIN_AGREEMENT, DEFAULT_SLOWDOWN, DeviceProfile
from splitting.profiles import ModelProfile
from splitting.reference import (
    DEFAULT_DEVICE_CLASS,
    DEFAULT_SERVER_PROFILE,
    reference_device,
    with_reference_agreement,
)
from splitting.server_profile import ServerProfile
from splitting.traces import UplinkTrace

#: Device "class" meaning: profile the model on this host, with `--slowdown`.
MEASURED_HERE = "here"
#: Simulated time at least this long (s): short traces repeat, as mahimahi repeats them.
MIN_DURATION_S = 1000.0


class InputError(SplitmqError):
    """A profile or trace the simulator cannot use."""


def server_profile(path: str | Path | None = None) -> ServerProfile:
    """The given server profile, else the shipped H200 profile."""
    try:
        return ServerProfile.load(Path(path) if path is not None else DEFAULT_SERVER_PROFILE)
    except SplittingError as exc:
        raise InputError(str(exc)) from exc


def device_profile(
    model: str,
    *,
    device_class: str = DEFAULT_DEVICE_CLASS,
    slowdown: float = DEFAULT_SLOWDOWN,
    path: str | Path | None = None,
    codec: str | None = None,
    codecs: tuple[str, ...] = (),
    input_codec: str | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    backend: str = "torch",
) -> DeviceProfile:
    """The device: the shipped reference class `device_class` on `backend` (reproducible
    anywhere), or with
    `device_class="here"` the model measured on this host with one thread (cached), or the
    profile at `path`; the last two scaled by `slowdown`."""
    try:
        if path is not None or device_class == MEASURED_HERE:
            measured = _measured_profile(model, path)
            if input_codec is not None:
                measured = measured.with_codec(codec or measured.codec, input_codec)
            device = DeviceProfile.from_model_profile(
                measured, slowdown=slowdown, codec=codec, codecs=codecs, min_agreement=min_agreement
            )
        else:
            device = reference_device(
                device_class,
                model=model,
                codec=codec,
                codecs=codecs,
                input_codec=input_codec,
                min_agreement=min_agreement,
                backend=backend,
            )
    except SplittingError as exc:
        raise InputError(str(exc)) from exc
    if device.model != model:
        raise InputError(f"device profile {path} is for {device.model!r}, not {model!r}")
    return device


def _measured_profile(model: str, path: str | Path | None) -> ModelProfile:
    if path is not None:
        return ModelProfile.load(path)
    from splitting.profiling import load_or_profile  # torch: only when measuring
    from splitting.registry import load_model

    return with_reference_agreement(load_or_profile(load_model(model), threads=1))


def read_trace(path: str | Path) -> UplinkTrace:
    try:
        return UplinkTrace.read(path)
    except SplittingError as exc:
        raise InputError(str(exc)) from exc


def default_duration_s(trace: UplinkTrace) -> float:
    """One pass over the trace, and at least `MIN_DURATION_S` (thousands of requests)."""
    return max(trace.period_ms / 1000, MIN_DURATION_S)
