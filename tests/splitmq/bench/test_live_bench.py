"""`splitmq bench live`: the live system and the simulator on the same synthetic trace."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmq.bench.errors import BenchError
from splitmq.bench.live import LiveBenchOptions
from splitmq.cli import main
from splitting.server_profile import measure_server_profile
from splitting.traces import UplinkTrace

MODEL = "efficientnet-lite0"
REQUESTS = 4
RUN_KEYS = {"mean_ms", "p50_ms", "p95_ms", "requests", "offloaded", "local"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh profile cache, so the user's own stays untouched."""
    directory = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPLITMQ_CACHE_DIR", str(directory))
        yield directory


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed-rate 10 Mbit/s link written as a mahimahi trace file."""
    link = UplinkTrace.fixed_rate(10.0)
    path = tmp_path_factory.mktemp("traces") / "fixed-10mbit.up"
    path.write_text("".join(f"{t}\n" for t in link.times_ms))
    return path


@pytest.fixture(scope="module")
def server_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real CPU profile of the tails, batch 1 only (what one device needs), kept short."""
    path = tmp_path_factory.mktemp("server") / "cpu.json"
    measure_server_profile(MODEL, (1,), repeats=1, warmup=1, threads=1, path=path)
    return path


def _bench(argv: list[str], out: Path) -> dict[str, object]:
    assert main(["bench", "live", *argv, "--rate", "5", "--json", str(out)]) == 0
    report: dict[str, object] = json.loads(out.read_text())
    return report


def _check_report(report: dict[str, object], requests: int) -> None:
    assert {"trace", "settings", "live", "sim", "difference_pct"} <= set(report)
    for name in ("live", "sim"):
        run = report[name]
        assert isinstance(run, dict)
        assert set(run) >= RUN_KEYS
        assert run["requests"] == requests
        assert run["offloaded"] + run["local"] == requests
        assert 0 < run["p50_ms"] <= run["p95_ms"]
    assert isinstance(report["difference_pct"], float) and math.isfinite(report["difference_pct"])


@pytest.mark.integration
def test_fixed_split_runs_live_and_simulated_the_same_requests(
    tmp_path: Path, cache: Path, trace: Path, server_profile: Path
) -> None:
    argv = ["--trace", str(trace), "--split", "0", "--requests", str(REQUESTS)]
    report = _bench([*argv, "--server-profile", str(server_profile)], tmp_path / "live.json")
    _check_report(report, REQUESTS)
    live, sim, settings = report["live"], report["sim"], report["settings"]
    assert isinstance(live, dict) and isinstance(sim, dict) and isinstance(settings, dict)
    # Split 0 through a healthy worker: every request offloaded, in both runs.
    assert live["splits"] == sim["splits"] == {"0": REQUESTS}
    assert live["offloaded"] == sim["offloaded"] == REQUESTS
    assert settings["policy"] == "fixed" and settings["split"] == 0
    # The simulated requests start where the live ones started on the shaper's trace clock.
    assert settings["trace_offset_s"] > 0


@pytest.mark.integration
def test_dynamic_policy_runs_live_and_simulated_the_same_requests(
    tmp_path: Path, cache: Path, trace: Path, server_profile: Path
) -> None:
    argv = ["--trace", str(trace), "--policy", "dynamic", "--requests", "3"]
    report = _bench([*argv, "--server-profile", str(server_profile)], tmp_path / "live.json")
    _check_report(report, 3)
    settings = report["settings"]
    assert isinstance(settings, dict) and settings["policy"] == "dynamic"


def test_bad_settings_are_refused_with_a_reason(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "live", "--trace", str(trace), "--policy", "dynamic", "--split", "3"])
    assert code == 2
    assert "does not combine with dynamic" in capsys.readouterr().err
    with pytest.raises(BenchError, match="at least one request"):
        LiveBenchOptions(trace=trace, requests=0)
    with pytest.raises(BenchError, match="rate_hz"):
        LiveBenchOptions(trace=trace, rate_hz=0)
