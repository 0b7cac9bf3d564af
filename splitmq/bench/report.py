"""The one shape of every benchmark's options and report.

Every report subclasses `BenchReport`, so each `--json` carries the same `provenance` block: the
commit, the machine, the library versions, when it ran and the options it ran with; figures
measured on different days or hosts can be compared knowing what produced them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from splitmq.reports import Machine, machine, package_version
from splitmq_base.models import StrictModel

PACKAGE_DIR = Path(__file__).resolve().parent
#: Inference backends whose versions a report names when they are installed.
BACKENDS = ("onnxruntime", "openvino")


class BenchOptions(StrictModel):
    """Base of every benchmark's options: strict, immutable, validated when built."""


class Provenance(StrictModel):
    """What produced a report's figures."""

    commit: str | None = Field(description="`git rev-parse HEAD`; null outside a checkout")
    machine: Machine
    cpu_cores: int | None = Field(description="os.cpu_count()")
    python: str
    torch: str | None = Field(description="torch's version; null when not installed")
    backends: dict[str, str | None] = Field(
        description="onnxruntime and openvino versions, null where not installed"
    )
    date_utc: datetime
    settings: dict[str, Any] = Field(description="the options the run used")

    @classmethod
    def collect(cls, settings: BaseModel | None = None) -> Provenance:
        """The provenance of a run with `settings`, taken now."""
        return cls(
            commit=git_commit(),
            machine=machine(),
            cpu_cores=os.cpu_count(),
            python=platform.python_version(),
            torch=package_version("torch"),
            backends={name: package_version(name) for name in BACKENDS},
            date_utc=datetime.now(UTC),
            settings={} if settings is None else settings.model_dump(mode="json"),
        )


class BenchReport(StrictModel):
    """Base of every benchmark's report: its figures plus the common provenance."""

    provenance: Provenance


def emit_with_provenance(report: dict[str, Any], path: str | None) -> None:
    """A benchmark run as a script (`python -m splitmq.bench.<name>`): its report with the same
    provenance block as every other, printed, and written to `path` when given."""
    settings = {key: value for key, value in report.items() if isinstance(value, int | float)}
    provenance = Provenance.collect().model_copy(update={"settings": settings})
    text = json.dumps({**report, "provenance": provenance.model_dump(mode="json")}, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")


def git_commit(where: Path = PACKAGE_DIR) -> str | None:
    """The full commit of the checkout holding `where`; None outside one or without git."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=where,
            check=False,
        )
    except OSError:
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None
