"""A fresh worker process and a fresh device process: the device offloads within its first
three requests, and the report carries its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmq.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_device_started_beside_a_fresh_worker_offloads_within_three_requests(
    tmp_path: Path,
) -> None:
    out = tmp_path / "cold.json"
    argv = ["bench", "cold-start", "--devices", "1", "--requests", "4", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    device = result["devices"]["cold1"]
    assert device["requests"] == 4
    assert device["first_offload"] is not None and device["first_offload"] <= 3
    assert {"commit", "cpus", "processor", "date"} <= set(result["machine"])
