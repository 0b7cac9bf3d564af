"""A misspelt config key, model or codec is answered with the closest right one."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_node.config import load_device_config
from device_node.errors import ConfigError as DeviceConfigError
from edge_worker.config import load_worker_config
from edge_worker.errors import ConfigError as WorkerConfigError
from schemas.codecs import get_codec
from schemas.errors import SchemaError
from splitmq_base.validation import did_you_mean
from splitting.errors import UnregisteredModelError
from splitting.registry import get_spec


def _device_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "device.yaml"
    path.write_text(text)
    with pytest.raises(DeviceConfigError) as error:
        load_device_config(path)
    return str(error.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("device_id: c\nmodle: x\n", "  modle: unknown key (did you mean 'model'?)"),
        ("device_id: c\nbroker: {hots: h}\n", "  broker.hots: unknown key (did you mean 'host'?)"),
        (
            "device_id: c\npolicy: {kind: fixed, splt: 3}\n",
            "  policy.splt: unknown key (did you mean 'split'?)",
        ),
        (
            "device_id: c\npolicy: {options: {race_abve: 0.1}}\n",
            "  policy.options.race_abve: unknown key (did you mean 'race_above'?)",
        ),
        (
            "device_id: c\nsource: {knd: folder}\n",
            "  source.knd: unknown key (did you mean 'kind'?)",
        ),
    ],
)
def test_a_misspelt_device_key_gets_the_closest_known_one(
    tmp_path: Path, text: str, line: str
) -> None:
    assert line in _device_error(tmp_path, text).splitlines()


def test_a_key_like_no_other_gets_no_guess(tmp_path: Path) -> None:
    lines = _device_error(tmp_path, "device_id: c\nzzzzqqq: 1\n").splitlines()
    assert "  zzzzqqq: unknown key" in lines


def test_a_misspelt_worker_key_in_a_list_entry_gets_the_closest_known_one(tmp_path: Path) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("models:\n  - name: efficientnet-lite0\n    split: all\n")
    with pytest.raises(WorkerConfigError) as error:
        load_worker_config(path)
    assert "  models.0.split: unknown key (did you mean 'splits'?)" in str(error.value)


def test_a_misspelt_codec_gets_the_closest_known_one(tmp_path: Path) -> None:
    assert "unknown codec 'int55' (did you mean 'int5'?)" in _device_error(
        tmp_path, "device_id: c\ncodec: int55\n"
    )
    with pytest.raises(SchemaError, match=r"unknown codec 'lossles' \(did you mean 'lossless'\?\)"):
        get_codec("lossles")


def test_a_misspelt_model_gets_the_closest_registered_one() -> None:
    with pytest.raises(UnregisteredModelError) as error:
        get_spec("efficientnet-lite")
    message = str(error.value)
    expected = "unknown model 'efficientnet-lite' (did you mean 'efficientnet-lite0'?);"
    assert message.startswith(expected)
    assert "\n" not in message


def test_no_suggestion_without_a_close_choice() -> None:
    assert did_you_mean("xyz", ["efficientnet-lite0"]) == ""
