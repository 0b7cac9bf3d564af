"""Server-load scenarios: the edge worker's background load over time.

The load is what other devices make the worker do: it runs back-to-back batches of `batch`
background requests (the whole model, split 0) with `queue` requests waiting ahead of any new
arrival. The server profile's batch dimension stands for this load: a batch of b costs
tail_ms(model, 0, b), and our own request's tail runs in a batch of the same size.

- `idle`: no background load; our request runs alone.
- `steady`: a steady, moderately loaded worker (batch 32, ~5 batches queued), fluctuating.
- `switching`: light (batch 4, a few requests queued) and heavy (batch 64, ~16 batches queued)
  phases alternating every 20-40 s.

Within a phase the queue length fluctuates (a log-normal AR(1) process with a correlation time
of a few seconds), so telemetry that is a second old is informative but not exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitmq_base.errors import SplitmqError

SCENARIOS = ("idle", "steady", "switching")
#: Time step of the load process (s).
LOAD_STEP_S = 0.1


class ScenarioError(SplitmqError):
    """An unknown scenario or a malformed load specification."""


@dataclass(frozen=True)
class LoadLevel:
    """A phase's background: batch size and mean queue length (requests ahead of ours)."""

    batch: int
    mean_queue: float


LIGHT = LoadLevel(batch=4, mean_queue=4.0)
STEADY = LoadLevel(batch=32, mean_queue=160.0)
HEAVY = LoadLevel(batch=64, mean_queue=1024.0)


@dataclass(frozen=True)
class ServerLoad:
    """Background batch size and queue length on a grid of `LOAD_STEP_S` (0 batch = idle)."""

    name: str
    batch: np.ndarray
    queue: np.ndarray
    heavy: np.ndarray  # True where the phase is the heavy one (for plots)

    def index(self, t_s: float) -> int:
        return min(max(int(t_s / LOAD_STEP_S), 0), self.batch.size - 1)

    def at(self, t_s: float) -> tuple[int, int]:
        """(background batch size, queue length) at time t (held after the end)."""
        i = self.index(t_s)
        return int(self.batch[i]), int(self.queue[i])


def make_load(
    name: str,
    duration_s: float,
    *,
    seed: int = 0,
    phase_s: tuple[float, float] = (20.0, 40.0),
    sigma: float = 0.35,
    correlation_s: float = 3.0,
) -> ServerLoad:
    """Build scenario `name` for `duration_s` seconds (deterministic for a given seed)."""
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown load scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if duration_s <= 0:
        raise ScenarioError(f"scenario duration must be > 0 s, got {duration_s}")
    steps = int(np.ceil(duration_s / LOAD_STEP_S)) + 1
    rng = np.random.default_rng(seed)
    if name == "idle":
        zeros = np.zeros(steps, dtype=np.int64)
        return ServerLoad(name, zeros, zeros.copy(), np.zeros(steps, dtype=bool))
    levels = _phases(name, steps, rng, phase_s)
    wobble = _lognormal_ar1(steps, rng, sigma=sigma, correlation_s=correlation_s)
    batch = np.array([level.batch for level in levels], dtype=np.int64)
    queue = np.rint([level.mean_queue for level in levels] * wobble).astype(np.int64)
    heavy = np.array([level is HEAVY for level in levels], dtype=bool)
    return ServerLoad(name, batch, queue, heavy)


def _phases(
    name: str, steps: int, rng: np.random.Generator, phase_s: tuple[float, float]
) -> list[LoadLevel]:
    if name == "steady":
        return [STEADY] * steps
    levels: list[LoadLevel] = []
    current = LIGHT
    while len(levels) < steps:
        length = int(rng.uniform(*phase_s) / LOAD_STEP_S)
        levels.extend([current] * max(1, length))
        current = HEAVY if current is LIGHT else LIGHT
    return levels[:steps]


def _lognormal_ar1(
    steps: int, rng: np.random.Generator, *, sigma: float, correlation_s: float
) -> np.ndarray:
    """exp(x) with x a stationary AR(1) of std `sigma`, scaled to mean 1."""
    rho = float(np.exp(-LOAD_STEP_S / correlation_s))
    noise = rng.normal(0.0, sigma * np.sqrt(1 - rho**2), steps)
    x = np.empty(steps)
    x[0] = rng.normal(0.0, sigma)
    for i in range(1, steps):
        x[i] = rho * x[i - 1] + noise[i]
    return np.asarray(np.exp(x - sigma**2 / 2))
