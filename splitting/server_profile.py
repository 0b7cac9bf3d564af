"""Edge-server profiles: tail time of each split at each batch size.

The format is that of ../shared/profiles/h200-eager-torch2.11.json: `models.<name>` holds
`blocks` (n), `out_shape`, `block_ms["<dtype>@<batch>"][i]` and `tail_ms["<dtype>@<batch>"][k]`
(blocks k..n-1; k = 0 is the whole model, k = n nothing). `measure_server_profile` writes the same
format from this host's own timings (the live worker's CPU), so the simulator can run against the
server that the live demo really has.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from splitmq_base.validation import validation_report
from splitting.errors import ProfileError
from splitting.jsonfile import read_json_object

if TYPE_CHECKING:  # torch is imported only to measure
    from splitting.partition import SplitModel

DEFAULT_DTYPE = "fp32"
# The shared format carries informational keys of its own (torch versions, full_ms); the keys
# read here are typed strictly, the others are kept as they are.
_SHARED_FORMAT = ConfigDict(extra="allow", frozen=True, strict=True)


class ServerModelTimes(BaseModel):
    """`models.<name>`: n blocks, and per "<dtype>@<batch>" the tail time of every split."""

    model_config = _SHARED_FORMAT

    blocks: int = Field(ge=0)
    tail_ms: dict[str, list[float]] = Field(min_length=1)
    out_shape: list[list[int]] = Field(default_factory=list)
    block_ms: dict[str, list[float]] = Field(default_factory=dict)


class ServerProfileFile(BaseModel):
    """The whole file: the server's name and the timings of each model it serves."""

    model_config = _SHARED_FORMAT

    device: str = "unknown"
    models: dict[str, ServerModelTimes] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Curve:
    """Tail times of one model and dtype: batches ascending, ms[batch index][k]."""

    batches: np.ndarray
    ms: np.ndarray


class ServerProfile:
    """Tail latency per (model, split, batch) of one server, interpolated over batch size."""

    def __init__(self, data: Mapping[str, Any], *, source: str = "profile") -> None:
        self.source = source
        try:
            parsed = ServerProfileFile.model_validate(dict(data))
        except ValidationError as exc:
            heading = f"{source}: malformed server profile:"
            report = validation_report(exc, heading, data=data, spelling="json")
            raise ProfileError(report) from exc
        if not parsed.models:
            raise ProfileError(f"{source}: a server profile needs a non-empty 'models' object")
        self.device = parsed.device
        self._data = {str(k): v for k, v in data.items()}
        self._blocks: dict[str, int] = {}
        self._curves: dict[tuple[str, str], _Curve] = {}
        for name, entry in parsed.models.items():
            self._blocks[name] = entry.blocks
            for dtype, curve in _curves(f"{source}: model {name!r}", entry).items():
                self._curves[(name, dtype)] = curve

    @classmethod
    def load(cls, path: str | Path) -> ServerProfile:
        return cls(read_json_object(Path(path), "server profile"), source=str(path))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self._data, indent=1) + "\n")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))  # a deep copy

    def models(self) -> list[str]:
        return sorted(self._blocks)

    def blocks(self, model: str) -> int:
        return self._blocks[self._check_model(model)]

    def batches(self, model: str, dtype: str = DEFAULT_DTYPE) -> list[int]:
        return [int(b) for b in self._curve(model, dtype).batches]

    def tail_ms(self, model: str, k: int, batch: float = 1, dtype: str = DEFAULT_DTYPE) -> float:
        """Time of one batch of `batch` requests through blocks [k, n) of `model`.

        Linear between measured batch sizes; below the smallest measured size the smallest's
        time; above the largest, proportional to the batch (the server runs more batches).
        """
        curve = self._curve(model, dtype)
        n = self._blocks[model]
        if not 0 <= k <= n:
            raise ProfileError(f"{self.source}: split {k} outside 0..{n} for {model}")
        column = curve.ms[:, k]
        batch = max(float(batch), float(curve.batches[0]))
        largest = float(curve.batches[-1])
        if batch > largest:
            return float(column[-1] * batch / largest)
        return float(np.interp(batch, curve.batches, column))

    def _check_model(self, model: str) -> str:
        if model not in self._blocks:
            raise ProfileError(
                f"{self.source}: no server timings for model {model!r} "
                f"(profiled: {', '.join(self.models())})"
            )
        return model

    def _curve(self, model: str, dtype: str) -> _Curve:
        self._check_model(model)
        curve = self._curves.get((model, dtype))
        if curve is None:
            have = sorted(d for (m, d) in self._curves if m == model)
            raise ProfileError(f"{self.source}: no {dtype} timings for {model} (have {have})")
        return curve


def _curves(where: str, entry: ServerModelTimes) -> dict[str, _Curve]:
    by_dtype: dict[str, dict[int, list[float]]] = {}
    for key, times in entry.tail_ms.items():
        dtype, batch = _parse_key(where, key)
        if len(times) != entry.blocks + 1:
            raise ProfileError(f"{where}: tail_ms[{key!r}] must list {entry.blocks + 1} times")
        if any(not np.isfinite(t) or t < 0 for t in times):
            raise ProfileError(f"{where}: tail_ms[{key!r}] holds a negative or non-finite time")
        by_dtype.setdefault(dtype, {})[batch] = times
    curves = {}
    for dtype, rows in by_dtype.items():
        batches = sorted(rows)
        curves[dtype] = _Curve(
            batches=np.array(batches, dtype=np.float64),
            ms=np.array([rows[b] for b in batches], dtype=np.float64),
        )
    return curves


def _parse_key(where: str, key: str) -> tuple[str, int]:
    dtype, sep, batch = key.partition("@")
    try:
        size = int(batch)
    except ValueError:
        size = 0
    if not sep or not dtype or size < 1:
        raise ProfileError(f"{where}: key {key!r} is not '<dtype>@<batch>' (e.g. 'fp32@8')")
    return dtype, size


def measure_server_profile(
    model_name: str,
    batches: Iterable[int] = (1, 2, 4, 8),
    *,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    path: str | Path | None = None,
    weights: str | None = None,
) -> ServerProfile:
    """Time tail(k) for every split k of `model_name` on this host's CPU, per batch size.

    Writes (when `path` is given) and returns a profile in the shared format, so that the
    simulator can run against the worker the live demo really runs. Median of `repeats` runs.
    """
    import torch  # heavy: only when measuring

    from splitting.registry import load_model
    from splitting.torch_blocks import torch_threads

    sizes = sorted({int(b) for b in batches})
    if not sizes or sizes[0] < 1:
        raise ProfileError(f"batch sizes must be >= 1, got {list(batches)}")
    if repeats < 1 or warmup < 0:
        raise ProfileError("repeats must be >= 1 and warmup >= 0")
    with torch_threads(threads):
        model = load_model(model_name, weights=weights)
        tail_ms = _tail_times(model, sizes, repeats, warmup)
        device = f"cpu ({platform.node()}, {torch.get_num_threads()} threads)"
    data = {
        "device": device,
        "torch": torch.__version__,
        "models": {
            model_name: {
                "blocks": model.n,
                "out_shape": [list(s) for s in model.block_output_shapes()],
                "tail_ms": tail_ms,
            }
        },
    }
    profile = ServerProfile(data, source=f"measured:{model_name}")
    if path is not None:
        profile.save(path)
    return profile


def _tail_times(
    model: SplitModel, sizes: Iterable[int], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """`<dtype>@<batch>` -> median ms of tail(k) for k = 0..n, on random images."""
    import torch

    rng = np.random.default_rng(0)
    tail_ms: dict[str, list[float]] = {}
    with torch.inference_mode():
        for size in sizes:
            images = rng.integers(0, 256, (size, model.input_size, model.input_size, 3))
            x = model.preprocess(images.astype(np.uint8))
            inputs = model.head_outputs(x, list(range(model.n + 1)))
            tail_ms[f"{DEFAULT_DTYPE}@{size}"] = [
                median_ms(partial(model.tail, inputs[k], k), repeats, warmup)
                for k in range(model.n + 1)
            ]
    return tail_ms


def median_ms(run: Callable[[], object], repeats: int, warmup: int) -> float:
    """The median wall time of `repeats` calls of `run`, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))
