"""One PNG per trace: uplink rate, the splits chosen by dynamic and by the oracle, latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splitmq.sim.runner import Simulation
from splitmq.sim.scenarios import LOAD_STEP_S
from splitmq.sim.strategies import TraceResult

SMOOTH_S = 10.0  # window of the latency curves


def plot_trace(sim: Simulation, result: TraceResult, path: str | Path) -> Path:
    """Draw the three panels for one trace and write them to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (rate_ax, split_ax, lat_ax) = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [1.2, 1, 1.4]}
    )
    duration = sim.settings.duration_s
    _rate_panel(rate_ax, sim, result, duration)
    _split_panel(split_ax, sim, result)
    _latency_panel(lat_ax, result)
    for ax in (rate_ax, split_ax, lat_ax):
        _shade_heavy(ax, sim)
        ax.grid(alpha=0.3)
    lat_ax.set_xlabel("time (s)")
    lat_ax.set_xlim(0, duration)
    fig.suptitle(
        f"{result.trace}: {sim.device.model}, slowdown {sim.device.slowdown:g}, "
        f"load {sim.load.name}, {sim.settings.rate_hz:g} req/s "
        f"(shaded: heavy server load)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _rate_panel(ax: Any, sim: Simulation, result: TraceResult, duration: float) -> None:
    starts, rates = sim.trace.rate_series(duration, 1.0)
    ax.step(starts, rates, where="post", lw=0.8, color="0.4", label="trace capacity (1 s)")
    dynamic = result.runs.get("dynamic")
    if dynamic is not None and dynamic.rate_estimate_bps is not None:
        ax.plot(
            dynamic.arrival_s,
            dynamic.rate_estimate_bps * 8 / 1e6,
            lw=0.8,
            color="tab:blue",
            label="dynamic's estimate",
        )
    ax.set_ylabel("uplink Mbit/s")
    ax.legend(loc="upper right", fontsize=8)


def _split_panel(ax: Any, sim: Simulation, result: TraceResult) -> None:
    oracle = result.runs["oracle"]
    ax.scatter(
        oracle.arrival_s, oracle.k, s=14, marker="s", color="tab:orange", alpha=0.35, label="oracle"
    )
    dynamic = result.runs.get("dynamic")
    if dynamic is not None:
        fell_back = dynamic.fallback
        ax.scatter(
            dynamic.arrival_s[~fell_back],
            dynamic.k[~fell_back],
            s=4,
            color="tab:blue",
            label="dynamic",
        )
        ax.scatter(
            dynamic.arrival_s[fell_back],
            dynamic.k[fell_back],
            s=18,
            marker="x",
            color="tab:red",
            label="dynamic, fell back",
        )
    ax.set_ylabel("split k")
    ax.set_ylim(-1, sim.device.n + 1)
    ax.legend(loc="upper right", fontsize=8)


def _latency_panel(ax: Any, result: TraceResult) -> None:
    colors = {
        "oracle": "tab:orange",
        "dynamic": "tab:blue",
        "static_best": "tab:green",
        "neurosurgeon": "tab:purple",
    }
    for name, color in colors.items():
        run = result.runs.get(name)
        if run is None:
            continue
        label = f"{name} (k={result.static_best_k})" if name == "static_best" else name
        ax.plot(
            run.arrival_s,
            _smooth(run.arrival_s, run.latency_ms),
            lw=1,
            color=color,
            label=f"{label}: mean {np.mean(run.latency_ms):.1f} ms",
        )
    ax.set_ylabel(f"latency ms ({SMOOTH_S:g} s mean)")
    ax.legend(loc="upper right", fontsize=8)


def _smooth(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Trailing mean over SMOOTH_S seconds."""
    cumulative = np.concatenate([[0.0], np.cumsum(y)])
    start = np.searchsorted(t, t - SMOOTH_S, side="left")
    counts = np.arange(1, t.size + 1) - start
    return np.asarray((cumulative[1:] - cumulative[start]) / counts)


def _shade_heavy(ax: Any, sim: Simulation) -> None:
    heavy = sim.load.heavy
    if not heavy.any():
        return
    edges = np.flatnonzero(np.diff(np.concatenate([[0], heavy.astype(int), [0]])))
    for begin, end in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(begin * LOAD_STEP_S, end * LOAD_STEP_S, color="0.85", alpha=0.5, lw=0)
