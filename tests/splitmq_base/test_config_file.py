"""The YAML configuration loader both runtimes share (splitmq_base.configfile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_node.config import load_device_config
from device_node.errors import ConfigError as DeviceConfigError
from edge_worker.config import WorkerConfig, load_worker_config, save_worker_config
from edge_worker.errors import ConfigError as WorkerConfigError


def test_an_empty_file_means_every_default(tmp_path: Path) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("# nothing set\n")
    assert load_worker_config(path).max_batch == WorkerConfig.model_fields["max_batch"].default


def test_an_empty_device_file_names_the_key_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("")
    with pytest.raises(DeviceConfigError) as error:
        load_device_config(path)
    assert str(path) in str(error.value)
    assert "device_id: Field required" in str(error.value)


def test_each_runtime_gets_its_own_error_class(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(DeviceConfigError, match="cannot read device configuration"):
        load_device_config(missing)
    with pytest.raises(WorkerConfigError, match="cannot read worker configuration"):
        load_worker_config(missing)


def test_validator_messages_are_reported_without_pydantic_prefix(tmp_path: Path) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("models:\n  - name: m\n  - name: m\n")
    with pytest.raises(WorkerConfigError) as error:
        load_worker_config(path)
    assert "  models: model listed twice: m" in str(error.value).splitlines()


def test_a_wrong_type_is_quoted_back_as_yaml_writes_it_under_the_file_and_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("max_batch: '4'\nbroker: {port: true}\n")
    with pytest.raises(WorkerConfigError) as error:
        load_worker_config(path)
    lines = str(error.value).splitlines()
    assert lines[0] == f"invalid worker configuration in {path}:"
    assert "  max_batch: Input should be a valid integer, got '4'" in lines
    assert "  broker.port: Input should be a valid integer, got true" in lines


def test_a_saved_worker_config_reads_back_equal_with_its_password(tmp_path: Path) -> None:
    config = load_worker_config(write_worker_yaml(tmp_path))
    path = tmp_path / "saved.yaml"
    save_worker_config(config, path)
    again = load_worker_config(path)
    assert again == config
    assert again.broker.password is not None
    assert again.broker.password.get_secret_value() == "s3cret"


def write_worker_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(
        "broker: {host: edge.local, port: 8883, username: w1, password: s3cret}\n"
        "worker_id: w1\nmodels: [{name: echo, splits: [1]}]\nrunner: echo\n"
        "max_batch: 4\nmax_wait_ms: 0\ntorch_threads: 2\n"
    )
    return path
