"""Profiles shipped inside the package, so that an evaluation gives the same figures anywhere.

- A device profile per real-weight model (`data/<model>.device.json`: efficientnet-lite0, the
  default, and efficientnet-lite1 and -lite2): bytes per (split, codec), codec times, head times
  and top-1 agreement, each measured once (host, torch version, images and date inside the
  file) with `splitmq profile --model <model> --images 61 --threads 1 --repeats 20 --json`.
- Reference device classes: that measurement's head times scaled so that the whole model takes
  a stated time. A class is a model of a device, not a claim about a particular board.
- The measured H200 edge-server profile (`data/h200-eager-torch2.11.json`; how it was measured
  is in `data/README.md`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from splitting.errors import ProfileError
from splitting.latency import DEFAULT_MIN_AGREEMENT, DeviceProfile
from splitting.profiles import ModelProfile

DATA_DIR = Path(__file__).resolve().parent / "data"
#: The edge server every shipped evaluation assumes unless told otherwise.
DEFAULT_SERVER_PROFILE = DATA_DIR / "h200-eager-torch2.11.json"


@dataclass(frozen=True)
class DeviceClass:
    """A reference device: the shipped measurement scaled so that the whole model takes
    `local_ms` on the device. The blocks keep their measured relative costs (they carry across
    CPUs); the absolute speed is what the class defines, so it does not depend on any host."""

    name: str
    local_ms: float
    description: str
    cores: int = 1

    def slowdown(self, profile: ModelProfile) -> float:
        measured = profile.device_ms_at(profile.n)
        if measured <= 0:
            raise ProfileError(f"{profile.model}: the shipped profile has no local time")
        return self.local_ms / measured


DEVICE_CLASSES: dict[str, DeviceClass] = {
    c.name: c
    for c in (
        DeviceClass(
            "fast-40ms", 40.0, "a fast device, 8 cores: the whole model in 40 ms on one", 8
        ),
        DeviceClass(
            "camera-150ms",
            150.0,
            "a camera-class device, 4 cores (a Raspberry Pi 4/5 class board) running eager "
            "PyTorch on one: the whole model in 150 ms",
            4,
        ),
        DeviceClass(
            "sensor-400ms",
            400.0,
            "a weak, battery-powered sensor, 1 core: the whole model in 400 ms",
            1,
        ),
    )
}
DEFAULT_DEVICE_CLASS = "camera-150ms"


def device_profile_path(model: str, backend: str = "torch") -> Path:
    """The shipped profile of `model` on `backend` (PyTorch's has no backend in its name)."""
    if backend == "torch":
        return DATA_DIR / f"{model}.device.json"
    return DATA_DIR / f"{model}.{backend}.device.json"


def backend_speedup(model: str, backend: str) -> float:
    """How many times faster `backend` runs `model` locally than eager PyTorch on the same
    host: the median ratio of the shipped `splitmq bench backends` report (1 for torch)."""
    if backend == "torch":
        return 1.0
    path = DATA_DIR / f"{model}.backends.json"  # `splitmq bench backends`: onnxruntime's
    if backend != "onnxruntime":
        raise ProfileError(f"no shipped speed-up of {backend} for {model!r}: only onnxruntime")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        ratio = float(report["local"]["median_ratio"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProfileError(f"no shipped {backend} speed-up for {model!r} ({path}): {exc}") from exc
    if report.get("model") != model or not ratio > 0:
        raise ProfileError(f"{path} is not a {backend} speed-up of {model!r}")
    return ratio


def has_reference(model: str) -> bool:
    return device_profile_path(model).is_file()


def reference_model_profile(model: str, backend: str = "torch") -> ModelProfile:
    """The shipped measurement of `model` on `backend`; ProfileError when none ships."""
    path = device_profile_path(model, backend)
    if not path.is_file():
        shipped = sorted(
            p.name.removesuffix(".device.json") for p in DATA_DIR.glob("*.device.json")
        )
        raise ProfileError(f"no shipped device profile for {model!r} (shipped: {shipped})")
    return ModelProfile.load(path)


def device_class(name: str) -> DeviceClass:
    if name not in DEVICE_CLASSES:
        raise ProfileError(
            f"unknown device class {name!r}; known: {', '.join(sorted(DEVICE_CLASSES))}"
        )
    return DEVICE_CLASSES[name]


def reference_device(
    name: str = DEFAULT_DEVICE_CLASS,
    *,
    model: str = "efficientnet-lite0",
    codec: str | None = None,
    codecs: Sequence[str] = (),
    input_codec: str | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    backend: str = "torch",
) -> DeviceProfile:
    """The device class `name` running `model` on `backend`, from the shipped profile. A class
    states its speed on eager PyTorch; the same hardware runs another backend as much faster
    as the shipped side-by-side measurement says."""
    chosen = device_class(name)
    profile = reference_model_profile(model, backend)
    if input_codec is not None or codec is not None:
        profile = profile.with_codec(codec or profile.codec, input_codec)
    return DeviceProfile.from_model_profile(
        profile,
        slowdown=chosen.slowdown(profile) / backend_speedup(model, backend),
        codec=codec,
        codecs=codecs,
        min_agreement=min_agreement,
        cores=chosen.cores,
    )


def with_reference_agreement(profile: ModelProfile) -> ModelProfile:
    """`profile` with the shipped profile's agreement figures where the model (name and
    fingerprint) and the backend are the same: agreement belongs to the model, codec and
    backend, not to the host, and the shipped figures come from more images than a device
    measures at start-up."""
    if not has_reference(profile.model):
        return profile
    shipped = reference_model_profile(profile.model)
    same_build = (shipped.fingerprint, shipped.n) == (profile.fingerprint, profile.n)
    # Agreement is measured per backend: another runtime's answers are its own to measure.
    if not same_build or shipped.backend != profile.backend:
        return profile
    splits = tuple(
        own.replace(agreement={**own.agreement, **ref.agreement})
        for own, ref in zip(profile.splits, shipped.splits, strict=True)
    )
    return profile.replace(splits=splits, images=max(profile.images, shipped.images))
