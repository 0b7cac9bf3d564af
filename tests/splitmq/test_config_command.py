"""`splitmq config example ROLE` and `splitmq config check FILE`: examples generated from the
models load back with no error, the shipped configs pass, and every error is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from splitmq.cli import main
from splitmq.commands.config import ROLES, _roles, check_file
from splitmq_base.cli import EXIT_CONFIG, EXIT_OK
from splitmq_base.configdoc import dotted_keys

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def _example(role: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["config", "example", role]) == EXIT_OK
    return capsys.readouterr().out


@pytest.mark.parametrize("role", ROLES)
def test_each_roles_example_checks_with_no_error(
    role: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{role}.yaml"
    path.write_text(_example(role, capsys))
    assert check_file(path) == (role, [])  # its role told from its keys alone
    assert main(["config", "check", str(path)]) == EXIT_OK
    assert capsys.readouterr().out == f"{path}: a valid {role} config\n"


@pytest.mark.parametrize("role", ROLES)
def test_each_roles_example_holds_every_key_with_its_real_default(
    role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _roles()[role]
    loaded = spec.model.model_validate(yaml.safe_load(_example(role, capsys)))
    assert loaded == spec.defaults
    every_key = dotted_keys(spec.defaults.model_dump(mode="json"))
    assert dotted_keys(yaml.safe_load(_example(role, capsys))) == every_key


def test_the_worker_example_shows_the_workers_own_keepalive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert yaml.safe_load(_example("worker", capsys))["broker"]["keepalive"] == 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_the_shipped_configs_pass_the_check(path: Path) -> None:
    role, problems = check_file(path)
    assert problems == []
    assert role == path.name.split(".")[0]


@pytest.mark.parametrize("role", ["device", "worker"])
def test_the_example_files_name_every_key_of_the_model(role: str) -> None:
    spec = _roles()[role]
    every_key = dotted_keys(spec.defaults.model_dump(mode="json"))
    # The device's file leaves policy.options to the policy (`options: {}`), as its comment says.
    every_key = {key for key in every_key if not key.startswith("policy.options.")}
    shipped = dotted_keys(yaml.safe_load((ROOT / "configs" / f"{role}.example.yaml").read_text()))
    assert sorted(every_key - shipped) == []


def test_each_error_is_one_line_with_file_key_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text("device_id: cam\npolicy: {kind: fixed, splt: 3}\njpeg_quality: 0\n")
    assert main(["config", "check", str(path)]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [  # in the model's key order
        f"{path}: jpeg_quality: Input should be greater than or equal to 1",
        f"{path}: policy.splt: unknown key (did you mean 'split'?)",
    ]


def test_an_unknown_model_name_is_an_error_without_loading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("worker_id: w1\nmodels: [{name: resnet-18}]\n")
    assert main(["config", "check", str(path)]) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}: models.0.name: unknown model 'resnet-18' (did you mean")


def test_the_role_can_be_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert main(["config", "check", str(path)]) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("splitmq config: error: ") and "pass --role" in line
    assert main(["config", "check", "--role", "worker", str(path)]) == EXIT_OK
    assert main(["config", "check", "--role", "device", str(path)]) == EXIT_CONFIG
    assert capsys.readouterr().err.splitlines() == [f"{path}: device_id: Field required"]


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "none.yaml")]) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("splitmq config: error: cannot read config")


def test_a_topic_level_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text("device_id: a/b\n")
    assert main(["config", "check", str(path)]) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}: ") and "'a/b'" in line
