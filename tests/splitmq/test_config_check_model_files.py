"""`splitmq config check` accepts a model file where a model name goes, and names one that is
not there, without loading anything."""

from __future__ import annotations

from pathlib import Path

import yaml

from splitmq.commands.config import check_file


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_present_model_file_passes(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("def build():\n    raise SystemExit('never run')\n")
    config = write(tmp_path / "w.yaml", {"models": [{"name": f"{tmp_path}/net.py:build"}]})
    assert check_file(config, "worker")[1] == []


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    config = write(tmp_path / "d.yaml", {"device_id": "cam", "model": f"{tmp_path}/gone.pt"})
    problems = check_file(config, "device")[1]
    assert problems == [f"{config}: model: model file {tmp_path}/gone.pt does not exist"]
