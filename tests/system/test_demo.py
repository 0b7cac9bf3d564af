"""`splitmq demo`: embedded broker, one worker, N devices; nothing lost, one result each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmq.cli import main
from splitmq.demo import DemoError, DemoOptions, DemoRun, format_summary, summarize
from splitting.traces import DEFAULT_ONE_WAY_MS

pytestmark = pytest.mark.integration

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"


@pytest.fixture(scope="module")
def profile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh profile cache shared by this module's demos: the first one profiles the model
    (as on a fresh machine), the next reuses it; the user's own cache stays untouched."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPLITMQ_CACHE_DIR", str(cache))
        yield cache


def test_demo_two_devices_every_request_has_exactly_one_result(
    tmp_path: Path, profile_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.json"
    argv = ["demo", "--devices", "2", "--requests", "4", "--policy", "fixed", "--slowdown", "1"]
    code = main([*argv, "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["requests"] == 8
    assert summary["results"] == 8
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    assert summary["offloaded"] + summary["local_fallback"] + summary["local_by_choice"] == 8
    assert summary["offloaded"] == 8  # a healthy worker answers every request
    assert summary["latency_ms"]["p50_ms"] <= summary["latency_ms"]["p95_ms"]
    records = summary["records"]
    assert len({r["request_id"] for r in records}) == 8
    assert {r["device_id"] for r in records} == {"dev1", "dev2"}
    # The default fixed split is an inner natural bottleneck of the model's profile.
    (split,) = {r["split"] for r in records}
    assert 0 < split < 18
    assert list((profile_cache / "profiles").glob("efficientnet-lite0-*.json"))
    # The live table shows each request with its prediction, then the summary.
    assert printed.count(" edge edge-1 ") == 8
    assert "lost            0" in printed


def test_demo_with_the_dynamic_policy_loses_nothing(tmp_path: Path, profile_cache: Path) -> None:
    out = tmp_path / "demo.json"
    argv = ["demo", "--devices", "1", "--requests", "4", "--policy", "dynamic", "--quiet"]
    code = main([*argv, "--json", str(out)])
    summary = json.loads(out.read_text())
    assert code == 0
    assert (summary["results"], summary["lost"], summary["policy"]) == (4, 0, "dynamic")


def test_demo_options_are_checked() -> None:
    with pytest.raises(DemoError, match="at least one device"):
        DemoOptions(devices=0)
    with pytest.raises(DemoError, match="does not combine"):
        DemoOptions(policy="dynamic", split=3)


def test_summary_counts_a_device_that_died_as_lost_requests() -> None:
    run = DemoRun(DemoOptions(devices=2, requests=3))
    run.device_errors["dev2"] = "LinkError: gone"
    summary = summarize(run)
    assert (summary["requests"], summary["results"], summary["lost"]) == (6, 0, 6)
    assert "device dev2 failed: LinkError: gone" in format_summary(summary)


def uplink_trace(tmp_path: Path) -> Path:
    """A real cellular trace from ../shared/traces; in a checkout without it, a mahimahi trace
    of a steady 2.3 Mbit/s link (one 1500-byte packet every 5 ms)."""
    real = TRACES / "TMobile-LTE-short.up"
    if real.is_file():
        return real
    steady = tmp_path / "steady.up"
    steady.write_text("".join(f"{ms}\n" for ms in range(5, 1001, 5)))
    return steady


def test_demo_through_a_trace_shaped_uplink(tmp_path: Path, profile_cache: Path) -> None:
    out = tmp_path / "demo.json"
    argv = ["demo", "--devices", "1", "--requests", "3", "--split", "0", "--quiet"]
    argv += ["--trace", str(uplink_trace(tmp_path)), "--json", str(out)]
    assert main(argv) == 0
    summary = json.loads(out.read_text())
    assert (summary["results"], summary["lost"], summary["offloaded"]) == (3, 0, 3)
    # Through the shaper, a publish waits for the trace's delivery opportunities and the
    # one-way delay each way before its PUBACK is back: never less than the two delays.
    for record in summary["records"]:
        assert record["latency"]["uplink_ms"] >= 2 * DEFAULT_ONE_WAY_MS


def test_ctrl_c_ends_the_demo_with_the_summary_of_what_ran(tmp_path: Path) -> None:
    """SIGINT to the demo's whole process group, as a terminal sends it: the embedded broker
    (in its own session) keeps serving while the devices finish their requests, and the demo
    prints its summary, says "interrupted" and exits 130."""
    out = tmp_path / "demo.json"
    command = [sys.executable, "-m", "splitmq.cli", "demo", "--requests", "400", "--json"]
    demo = subprocess.Popen(
        [*command, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As from a terminal: a shell's background job (CI may be one) ignores SIGINT, and a
        # child inherits that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert demo.stdout is not None
    seen = 0
    for line in demo.stdout:  # the live table: wait for a few records
        seen += line.startswith("#")
        if seen >= 6:
            break
    os.killpg(demo.pid, signal.SIGINT)
    rest, err = demo.communicate(timeout=60)
    assert demo.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "summary" in rest
    summary = json.loads(out.read_text())
    assert summary["interrupted"] is True
    assert 6 <= summary["results"] < 800 and summary["lost"] == 0
    assert summary["local_fallback"] == 0  # the broker outlived the Ctrl-C
