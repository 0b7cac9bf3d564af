"""One `--json` convention across the commands that have it: PATH writes a file beside the
table, alone (or `-`) prints only the JSON on stdout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from splitmq.cli import COMMANDS, build_parser, main

QUICK = ["profile", "--model", "efficientnet-lite0", "--images", "1", "--repeats", "1", "-q"]


def json_flags() -> dict[str, argparse.Action]:
    """Every (sub)command's --json action, by its command path."""
    found: dict[str, argparse.Action] = {}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if "--json" in action.option_strings:
                found[path] = action
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())

    for command, _ in COMMANDS:  # the parser registers only the command it is given in full
        walk(build_parser([command]), "")
    return found


def test_every_report_command_takes_json_alone_or_a_path() -> None:
    flags = json_flags()
    reports = {path: action for path, action in flags.items() if path != "monitor"}
    assert "profile" in reports and "demo" in reports and "bench chooser" in reports
    for path, action in reports.items():
        assert action.nargs == "?" and action.const == Path("-"), path


@pytest.mark.slow
def test_profile_json_path_writes_a_file_and_keeps_the_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.json"
    assert main([*QUICK, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cand" in printed and str(out) in printed
    assert json.loads(out.read_text())["model"] == "efficientnet-lite0"
    assert main([*QUICK, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "efficientnet-lite0"
