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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitting.errors import ProfileError
from splitting.jsonfile import read_json_object

DEFAULT_DTYPE = "fp32"


@dataclass(frozen=True)
class _Curve:
    """Tail times of one model and dtype: batches ascending, ms[batch index][k]."""

    batches: np.ndarray
    ms: np.ndarray


class ServerProfile:
    """Tail latency per (model, split, batch) of one server, interpolated over batch size."""

    def __init__(self, data: Mapping[str, Any], *, source: str = "profile") -> None:
        self.source = source
        self.device = str(data.get("device", "unknown"))
        models = data.get("models")
        if not isinstance(models, Mapping) or not models:
            raise ProfileError(f"{source}: a server profile needs a non-empty 'models' object")
        self._data = {str(k): v for k, v in data.items()}
        self._blocks: dict[str, int] = {}
        self._curves: dict[tuple[str, str], _Curve] = {}
        for name, entry in models.items():
            self._blocks[name], curves = _parse_model(source, name, entry)
            for dtype, curve in curves.items():
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


def _parse_model(source: str, name: str, entry: Any) -> tuple[int, dict[str, _Curve]]:
    where = f"{source}: model {name!r}"
    if not isinstance(entry, Mapping):
        raise ProfileError(f"{where} must be an object")
    try:
        blocks = int(entry["blocks"])
        tails = entry["tail_ms"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{where} needs integer 'blocks' and a 'tail_ms' object") from exc
    if not isinstance(tails, Mapping) or not tails:
        raise ProfileError(f"{where}: 'tail_ms' must be a non-empty object")
    by_dtype: dict[str, dict[int, list[float]]] = {}
    for key, values in tails.items():
        dtype, batch = _parse_key(where, str(key))
        if not isinstance(values, Sequence) or len(values) != blocks + 1:
            raise ProfileError(f"{where}: tail_ms[{key!r}] must list {blocks + 1} times")
        try:
            times = [float(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"{where}: tail_ms[{key!r}] holds a non-number") from exc
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
    return blocks, curves


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

    sizes = sorted({int(b) for b in batches})
    if not sizes or sizes[0] < 1:
        raise ProfileError(f"batch sizes must be >= 1, got {list(batches)}")
    if repeats < 1 or warmup < 0:
        raise ProfileError("repeats must be >= 1 and warmup >= 0")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model = load_model(model_name, weights=weights)
        rng = np.random.default_rng(0)
        tail_ms: dict[str, list[float]] = {}
        with torch.inference_mode():
            for size in sizes:
                images = rng.integers(0, 256, (size, model.input_size, model.input_size, 3))
                x = model.preprocess(images.astype(np.uint8))
                inputs = model.head_outputs(x, list(range(model.n + 1)))
                tail_ms[f"{DEFAULT_DTYPE}@{size}"] = [
                    _median_ms(lambda k=k, z=inputs[k]: model.tail(z, k), repeats, warmup)
                    for k in range(model.n + 1)
                ]
        data = {
            "device": f"cpu ({platform.node()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__,
            "models": {
                model_name: {
                    "blocks": model.n,
                    "out_shape": [list(s) for s in model.block_output_shapes()],
                    "tail_ms": tail_ms,
                }
            },
        }
    finally:
        torch.set_num_threads(previous_threads)
    profile = ServerProfile(data, source=f"measured:{model_name}")
    if path is not None:
        profile.save(path)
    return profile


def _median_ms(run: Any, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))
