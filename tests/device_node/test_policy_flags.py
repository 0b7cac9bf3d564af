"""`--split` and `--policy` on top of a config file: each kind keeps only its own options."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_node.cli import build_parser, config_from_args
from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "device.example.yaml"


def _config(*flags: str, path: Path = EXAMPLE) -> DeviceConfig:
    return config_from_args(build_parser().parse_args(["--config", str(path), *flags]))


def test_split_flag_on_the_example_config_gives_that_fixed_split() -> None:
    policy = _config("--split", "3").policy
    assert isinstance(policy, FixedPolicyConfig)
    assert (policy.kind, policy.split, policy.options) == ("fixed", 3, {})


def test_policy_fixed_on_the_example_config_uses_the_default_split() -> None:
    policy = _config("--policy", "fixed").policy
    assert isinstance(policy, FixedPolicyConfig)
    assert (policy.split, policy.options) == (None, {})


def test_policy_fixed_with_split_gives_that_split() -> None:
    policy = _config("--policy", "fixed", "--split", "5").policy
    assert (policy.kind, policy.split) == ("fixed", 5)


def test_policy_dynamic_on_a_fixed_config_drops_its_split(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("device_id: cam\npolicy: {kind: fixed, split: 4}\n")
    policy = _config("--policy", "dynamic", path=path).policy
    assert (policy.kind, policy.split) == ("dynamic", None)


def test_the_same_kind_keeps_the_files_options(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("device_id: cam\npolicy: {options: {half_life_s: 7.0}}\n")
    policy = _config("--policy", "dynamic", path=path).policy
    assert policy.kind == "dynamic"
    assert policy.options.half_life_s == 7.0  # type: ignore[union-attr]


def test_split_with_policy_dynamic_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"--split 3 means a fixed split") as error:
        _config("--policy", "dynamic", "--split", "3")
    assert "\n" not in str(error.value)
