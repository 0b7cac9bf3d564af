"""Pieces of the reports the demo, the benchmarks and the simulator write.

`LatencyStats` is the one shape of a latency summary in every report (`--json` and the
tables), so `p50_ms` means the same thing wherever it appears.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from splitmq_base.models import STRICT

#: The percentiles every summary carries.
PERCENTILES = (50, 90, 95, 99)


class LatencyStats(BaseModel):
    """A latency summary in milliseconds: sample count, mean, percentiles, maximum.

    With no samples, `count` is 0 and every figure is None (null in JSON), never NaN.
    """

    model_config = STRICT

    count: int = Field(ge=0, description="samples summarised")
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    @classmethod
    def of(cls, samples_ms: Iterable[float]) -> LatencyStats:
        """The summary of `samples_ms` (linear-interpolated percentiles, numpy's default)."""
        values = np.asarray(list(samples_ms), dtype=np.float64)
        if values.size == 0:
            return cls(count=0)
        p50, p90, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
        return cls(
            count=int(values.size),
            mean_ms=float(values.mean()),
            p50_ms=p50,
            p90_ms=p90,
            p95_ms=p95,
            p99_ms=p99,
            max_ms=float(values.max()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of a report's latency entry."""
        return self.model_dump()


def latency_stats(samples_ms: Iterable[float]) -> dict[str, Any]:
    """`LatencyStats.of(samples_ms).to_dict()`: a report's latency entry."""
    return LatencyStats.of(samples_ms).to_dict()


class Machine(BaseModel):
    """Where and when a report's figures were measured."""

    model_config = STRICT

    commit: str | None = Field(description="short commit; None outside a checkout")
    cpus: int | None
    processor: str
    python: str
    torch: str | None = Field(description="torch's version; None where not installed")
    date: str = Field(description="local date, YYYY-MM-DD")


#: `--json -` (or `--json` alone where a command allows it): the JSON on stdout, no table.
STDOUT = Path("-")


def add_json_option(parser: argparse.ArgumentParser, *, what: str = "results") -> None:
    """The one `--json` convention: `--json PATH` writes the JSON report to PATH beside the
    table on stdout; `--json -` or `--json` alone prints only the JSON, on stdout."""
    parser.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        nargs="?",
        const=STDOUT,
        metavar="PATH",
        help=f"write the {what} as JSON to PATH; `--json` alone or `--json -`: print the JSON"
        " on stdout instead of the table",
    )


def prints_json(path: Path | None) -> bool:
    return path == STDOUT


def write_report(
    report: BaseModel | dict[str, Any], path: Path | None, *, what: str = "written"
) -> None:
    """Write a command's JSON report (a model's JSON, or a plain dict's) to `path` (None:
    nowhere; `-`: stdout) and say where."""
    if path is None:
        return
    if isinstance(report, BaseModel):
        text = report.model_dump_json(indent=1)
    else:
        text = json.dumps(report, indent=1)
    if path == STDOUT:
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"  {what} to {path}")


def machine() -> Machine:
    """Where and when a report's figures were measured: the commit (None outside a checkout),
    cores, processor, Python, torch and the date."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except OSError:  # no git on this host
        commit = ""
    return Machine(
        commit=commit or None,
        cpus=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        torch=package_version("torch"),
        date=time.strftime("%Y-%m-%d"),
    )


def package_version(name: str) -> str | None:
    """The installed version of distribution `name` (read, not imported: torch takes seconds
    to import); None when not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
