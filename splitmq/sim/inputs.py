"""What a simulation is built from: device and server profiles, traces and settings.

Shared by `splitmq bench chooser` and the live-versus-simulated comparison, so that both build
the simulator the same way (same link constants, same profiles).
"""

from __future__ import annotations

from pathlib import Path

from splitmq.errors import SplitmqError
from splitting.errors import SplittingError
from splitting.latency import DEFAULT_SLOWDOWN, DeviceProfile
from splitting.server_profile import ServerProfile
from splitting.traces import UplinkTrace

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The measured H200 profile, outside the project (users may not have it).
DEFAULT_SERVER_PROFILE = REPO_ROOT.parent / "shared" / "profiles" / "h200-eager-torch2.11.json"
#: Simulated time at least this long (s): short traces repeat, as mahimahi repeats them.
MIN_DURATION_S = 1000.0


class InputError(SplitmqError):
    """A profile or trace the simulator cannot use."""


def server_profile(path: str | Path | None = None) -> ServerProfile:
    """The given server profile, else the shared H200 profile (with a clear error if absent)."""
    chosen = Path(path) if path is not None else DEFAULT_SERVER_PROFILE
    if path is None and not chosen.is_file():
        raise InputError(
            f"no server profile: the default {chosen} is not there; pass --server-profile PATH "
            "(a profile in the same format, e.g. one written by measure_server_profile)"
        )
    try:
        return ServerProfile.load(chosen)
    except SplittingError as exc:
        raise InputError(str(exc)) from exc


def device_profile(
    model: str,
    *,
    slowdown: float = DEFAULT_SLOWDOWN,
    path: str | Path | None = None,
    codec: str | None = None,
) -> DeviceProfile:
    """The model's profile from `path`, or measured on this host with one thread (cached),
    scaled to a device `slowdown` times slower."""
    try:
        if path is not None:
            device = DeviceProfile.load(path, slowdown=slowdown, codec=codec)
        else:
            from splitting.profiling import load_or_profile  # torch: only when measuring
            from splitting.registry import load_model

            measured = load_or_profile(load_model(model), threads=1)
            device = DeviceProfile.from_model_profile(measured, slowdown=slowdown, codec=codec)
    except SplittingError as exc:
        raise InputError(str(exc)) from exc
    if device.model != model:
        raise InputError(f"device profile {path} is for {device.model!r}, not {model!r}")
    return device


def read_trace(path: str | Path) -> UplinkTrace:
    try:
        return UplinkTrace.read(path)
    except SplittingError as exc:
        raise InputError(str(exc)) from exc


def default_duration_s(trace: UplinkTrace) -> float:
    """One pass over the trace, and at least `MIN_DURATION_S` (thousands of requests)."""
    return max(trace.period_ms / 1000, MIN_DURATION_S)
