"""The strategies compared on every trace, all run through the same simulated system.

- `local`: the whole model on the device; `offload`: split 0 (the JPEG); `fixed_<k>`: every
  split k = 0..n (fixed_0 is offload, fixed_n is local). Fixed splits get the same
  prediction-based fallback deadline as `dynamic` (a pinned `DynamicSplit`), so the
  comparison isolates the choice of split.
- `static_best`: the fixed split with the lowest mean on this trace, known only in hindsight.
- `neurosurgeon`: argmin of the latency model with the last observed uplink rate and no load
  awareness (the server taken as idle); it probes like `dynamic`, so it does not get stuck.
- `dynamic`: `splitting.policy.DynamicSplit`, the device node's default.
- `dynamic_race`: the same chooser, racing every offload whose chance of losing to local is
  material (`race="auto"`): the device also runs tail(k) and the first result wins.
- `dynamic_race_always`: racing every offload (`race="always"`): on a device with several cores
  a lost race costs no latency, only the device's compute (its energy).
- `dynamic_knows_past`: `dynamic` with an uplink estimate that is the trace's true capacity over
  the last 100 ms (`splitmq.sim.hindsight`): a reference for what exact knowledge of the recent
  past buys, against what the oracle's knowledge of the transfer itself buys.
- `oracle`: per request, the split that actually finished first (hindsight).

Only (split, codec) pairs at or above the device profile's agreement floor take part: the
fixed splits, static_best and the oracle are held to the same exact-answer rule as dynamic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitmq.sim.hindsight import PastCapacityEstimator
from splitmq.sim.runner import Simulation, StrategyRun
from splitting.policy import DynamicSplit
from splitting.server_profile import ServerProfile

BASELINES = (
    "local",
    "offload",
    "static_best",
    "neurosurgeon",
    "dynamic",
    "dynamic_race",
    "dynamic_race_always",
    "dynamic_knows_past",
    "oracle",
)


@dataclass
class TraceResult:
    """Every strategy's run on one trace, with the hindsight picks."""

    trace: str
    runs: dict[str, StrategyRun]
    static_best_k: int
    oracle_agreement: float

    def summary(self) -> dict[str, Any]:
        strategies = {name: run.stats() for name, run in self.runs.items()}
        for name, run in self.runs.items():
            if run.compute_ms is not None and run.compute_ms.size:
                strategies[name]["device_compute_ms"] = float(np.mean(run.compute_ms))
        return {
            "strategies": strategies,
            "static_best_k": self.static_best_k,
            "oracle_agreement": self.oracle_agreement,
            "requests": int(self.runs["oracle"].k.size),
            "fallbacks": {name: int(run.fallback.sum()) for name, run in self.runs.items()},
            "probes": {name: run.probes for name, run in self.runs.items() if run.probes},
            "captured": captured(self.runs),
            "captured_knowing_past": captured(self.runs, strategy="dynamic_knows_past"),
            "estimator_error": estimator_error(self.runs.get("dynamic")),
            "split_share": {name: split_share(run) for name, run in self.runs.items()},
        }


def captured(
    runs: dict[str, StrategyRun], *, strategy: str = "dynamic", min_gain: float = 0.01
) -> float | None:
    """Share of the oracle's gain over static_best that `strategy` captures, on mean latency:
    (static_best - dynamic) / (static_best - oracle); None where the oracle gains under
    `min_gain` (the ratio of two small numbers says nothing)."""
    if strategy not in runs:
        return None
    static = float(np.mean(runs["static_best"].latency_ms))
    oracle = float(np.mean(runs["oracle"].latency_ms))
    dynamic = float(np.mean(runs[strategy].latency_ms))
    if static - oracle < min_gain * static:
        return None
    return (static - dynamic) / (static - oracle)


def estimator_error(run: StrategyRun | None) -> dict[str, float | int | None]:
    """Median and p90 of |log(estimated / actual rate over the transfer)| of run's offloads."""
    errors = run.estimate_error if run is not None else None
    if errors is None or errors.size == 0:
        return {"p50": None, "p90": None, "samples": 0}
    return {
        "p50": float(np.percentile(errors, 50)),
        "p90": float(np.percentile(errors, 90)),
        "samples": int(errors.size),
    }


def split_share(run: StrategyRun) -> dict[str, float]:
    """Share of run's requests at each split (keys are split indices as strings)."""
    ks, counts = np.unique(run.k, return_counts=True)
    return {str(int(k)): float(c / run.k.size) for k, c in zip(ks, counts, strict=True)}


def policy_factories(
    sim: Simulation, server_profile: ServerProfile, **dynamic_options: Any
) -> dict[str, Callable[[], DynamicSplit]]:
    """Factories of every non-oracle strategy's policy, by strategy name."""
    device = sim.device
    one_way = sim.settings.one_way_ms
    common: dict[str, Any] = {"server_profile": server_profile, "one_way_ms": one_way}

    def pinned(k: int) -> Callable[[], DynamicSplit]:
        return lambda: DynamicSplit.build(device, pin=k, probe_size=0, **common)

    factories: dict[str, Callable[[], DynamicSplit]] = {
        f"fixed_{k}": pinned(k) for k in device.admissible_codecs()
    }
    factories["neurosurgeon"] = lambda: DynamicSplit.build(
        device, rate_mode="last", load_aware=False, **common
    )
    factories["dynamic"] = lambda: DynamicSplit.build(device, **common, **dynamic_options)
    racing = {**dynamic_options, "race": dynamic_options.get("race", "auto")}
    factories["dynamic_race"] = lambda: DynamicSplit.build(device, **common, **racing)
    always = {**dynamic_options, "race": "always"}
    factories["dynamic_race_always"] = lambda: DynamicSplit.build(device, **common, **always)

    def knows_past() -> DynamicSplit:
        past = PastCapacityEstimator(sim.trace, rtt_s=2 * one_way / 1000)
        return DynamicSplit.build(device, uplink=past, **common, **dynamic_options)

    factories["dynamic_knows_past"] = knows_past
    return factories


def evaluate(
    sim: Simulation,
    server_profile: ServerProfile,
    *,
    only: Iterable[str] | None = None,
    **dynamic_options: Any,
) -> TraceResult:
    """Run every strategy on `sim` and pick the hindsight baselines."""
    n = sim.device.n
    factories = policy_factories(sim, server_profile, **dynamic_options)
    wanted = set(only) if only is not None else None
    runs: dict[str, StrategyRun] = {}
    for name, factory in factories.items():
        if wanted is None or name in wanted or name.startswith("fixed_"):
            runs[name] = sim.run_policy(name, factory())
    runs["oracle"] = sim.run_oracle()
    runs["offload"] = _renamed(runs["fixed_0"], "offload")
    runs["local"] = _renamed(runs[f"fixed_{n}"], "local")
    fixed = list(sim.device.admissible_codecs())
    static_k = min(fixed, key=lambda k: (float(np.mean(runs[f"fixed_{k}"].latency_ms)), k))
    runs["static_best"] = _renamed(runs[f"fixed_{static_k}"], "static_best")
    agreement = float("nan")
    if "dynamic" in runs:
        agreement = oracle_agreement(runs["dynamic"], runs["oracle"])
    return TraceResult(sim.trace.name, _ordered(runs, n), static_k, agreement)


def oracle_agreement(run: StrategyRun, oracle: StrategyRun) -> float:
    """Fraction of `run`'s requests whose split is the oracle's for the request started at
    the nearest time (a sequential device's schedule can drift after a slow request)."""
    last = oracle.k.size - 1
    index = np.searchsorted(oracle.arrival_s, run.arrival_s)
    left, right = np.clip(index - 1, 0, last), np.clip(index, 0, last)
    closer_left = np.abs(run.arrival_s - oracle.arrival_s[left]) <= np.abs(
        oracle.arrival_s[right] - run.arrival_s
    )
    nearest = np.where(closer_left, left, right)
    return float(np.mean(run.k == oracle.k[nearest]))


def _renamed(run: StrategyRun, name: str) -> StrategyRun:
    return StrategyRun(
        name,
        run.arrival_s,
        run.k,
        run.latency_ms,
        run.offloaded,
        run.fallback,
        run.rate_estimate_bps,
        run.probes,
        compute_ms=run.compute_ms,
        estimate_error=run.estimate_error,
    )


def _ordered(runs: dict[str, StrategyRun], n: int) -> dict[str, StrategyRun]:
    order = [*BASELINES, *(f"fixed_{k}" for k in range(n + 1))]
    return {name: runs[name] for name in order if name in runs}
