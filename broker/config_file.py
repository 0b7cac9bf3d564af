"""YAML configuration files validated into pydantic models, for both runtimes.

The device and the worker read their configuration the same way: a UTF-8 YAML mapping (an
empty file means all defaults), validated into a model that rejects unknown keys. Every
problem raises the caller's own error class (its package's `ConfigError`) with a message that
names the file and each bad key as a dotted path (`policy.split: ...`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)


def validation_report(error: ValidationError, heading: str) -> str:
    """`heading`, then one line per bad key as a dotted path with pydantic's reason."""
    lines = [heading]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def validate_config(
    model: type[ConfigModel],
    data: Mapping[str, Any],
    *,
    what: str,
    source: str,
    error: type[Exception],
) -> ConfigModel:
    """`data` validated into `model`; `error` lists the bad keys of the `what` from `source`."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise error(validation_report(exc, f"invalid {what} in {source}:")) from exc


def read_yaml_mapping(path: Path, *, what: str, error: type[Exception]) -> dict[str, Any]:
    """The mapping in the YAML file at `path` ({} when empty); `error` says why it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a mapping of keys to values")
    return data
