"""The README quotes command output only where a test holds it to the real command: the demo's
table header, `splitmq profile`'s header and default input codec, and the model list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device_node.table import header as demo_header
from splitmq.commands.profile import format_profile
from splitting.profiles import ModelProfile
from splitting.registry import available_models

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SPLITMQ = str(Path(sys.executable).parent / "splitmq")


def squeezed(line: str) -> str:
    return " ".join(line.split())


def code_lines() -> set[str]:
    """The lines inside the README's fenced code blocks."""
    inside, lines = False, set()
    for line in README.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.add(squeezed(line))
    return lines


def test_the_demo_header_is_the_demos() -> None:
    assert squeezed(demo_header().splitlines()[0]) in code_lines()


def test_every_registered_model_is_listed() -> None:
    missing = [name for name in available_models() if f"`{name}`" not in README]
    assert missing == []


@pytest.mark.slow
def test_the_profile_header_and_input_codec_are_the_commands() -> None:
    done = subprocess.run(
        [SPLITMQ, "profile", "--images", "1", "--repeats", "1", "--json", "-q"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    profile = ModelProfile.from_dict(json.loads(done.stdout))
    table = format_profile(profile).splitlines()
    header = next(line for line in table if line.strip().startswith("k  block"))
    assert squeezed(header) in code_lines()
    assert profile.input_codec == "webp"
    assert "lossless WebP by default" in README
    assert "sends the JPEG (quality 90)" not in README


TRACES = ROOT.parent / "shared" / "traces"
CHOOSER_COLUMNS = ("oracle", "dynamic", "dynamic_race", "dynamic_race_always",
                   "dynamic_knows_past", "static_best", "neurosurgeon")  # fmt: skip


def readme_chooser_rows() -> dict[str, list[str]]:
    """The README's chooser table: trace -> its mean latencies, as printed."""
    rows = {}
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 10 and (TRACES / f"{cells[0]}.up").is_file():
            rows[cells[0]] = cells[1:8]
    return rows


@pytest.mark.slow
@pytest.mark.skipif(not TRACES.is_dir(), reason="the real traces live in ../shared/traces")
def test_the_chooser_table_is_what_bench_chooser_gives() -> None:
    rows = readme_chooser_rows()
    assert len(rows) == 4
    traces = [arg for name in rows for arg in ("--trace", str(TRACES / f"{name}.up"))]
    done = subprocess.run(
        [SPLITMQ, "bench", "chooser", *traces, "--json", "-q"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["traces"]
    for name, printed in rows.items():
        strategies = report[f"{name}.up"]["strategies"]
        measured = [f"{strategies[column]['mean_ms']:.1f}" for column in CHOOSER_COLUMNS]
        assert printed == measured, name
