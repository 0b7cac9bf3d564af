"""`bench chooser` follows the one `--json` convention: no flag prints the table only, `--json`
alone prints only the JSON on stdout, and `--plots` without matplotlib is refused at once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from splitmq.cli import main
from tests.support.toy_model import toy_model_profile, toy_server


@pytest.fixture
def argv(tmp_path: Path) -> list[str]:
    trace = tmp_path / "flat.up"
    trace.write_text("\n".join(str(t) for t in range(0, 20_000, 2)) + "\n")
    device, server = tmp_path / "device.json", tmp_path / "server.json"
    toy_model_profile().save(device)
    toy_server().save(server)
    return ["bench", "chooser", "--trace", str(trace), "--model", "toy",
            "--device-profile", str(device), "--server-profile", str(server),
            "--duration", "20", "--codecs", "int8"]  # fmt: skip


def test_without_json_it_prints_the_table_and_writes_nothing(argv, tmp_path, capsys) -> None:
    before = set(tmp_path.iterdir())
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "dynamic" in printed and "targets" not in printed
    assert set(tmp_path.iterdir()) == before


def test_json_alone_prints_one_json_document(argv, capsys) -> None:
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "targets" in report["traces"]["flat.up"]


def test_plots_without_matplotlib_is_one_line_naming_the_extra(argv, tmp_path, capsys,
                                                                 monkeypatch) -> None:  # fmt: skip
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    assert main([*argv, "--plots", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["splitmq bench chooser: --plots needs matplotlib: pip install 'splitmq[bench]'"]
