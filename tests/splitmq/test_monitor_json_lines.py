"""`splitmq monitor --json` without `--once` streams one JSON snapshot per line; flags that only
make sense with `--once` are refused, not ignored."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from broker.launcher import MosquittoBroker
from splitmq.cli import main
from splitmq_base.cli import EXIT_CONFIG

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)  # a view that never prints a line must fail, not hang
def test_json_without_once_streams_json_lines(broker: MosquittoBroker) -> None:
    argv = ["monitor", "--port", str(broker.port), "--json", "--refresh", "0.2", "-q"]
    process = subprocess.Popen(
        [sys.executable, "-m", "splitmq.cli", *argv],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    for line in lines:
        snapshot = json.loads(line)
        assert set(snapshot) >= {"workers", "devices", "broker"}


def test_wait_without_once_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "--wait", "5"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert err == (
        "splitmq monitor: error: --wait is for --once (the live view and --json keep collecting)"
    )
