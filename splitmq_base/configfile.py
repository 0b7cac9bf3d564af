"""YAML configuration files validated into pydantic models, for both runtimes (and the
monitoring commands).

It sits beside `splitmq_base.errors` as a leaf module (pydantic and PyYAML only, nothing of
splitmq's), so the device and the worker import it without depending on `mqtt_session`, which
is about the connection, not about reading files.

The device and the worker read their configuration the same way: a UTF-8 YAML mapping (an
empty file means all defaults), validated into a model that rejects unknown keys. Every
problem raises the caller's own error class (its package's `ConfigError`) with a message that
names the file and each bad key as a dotted path (`policy.split: ...`), written by
`splitmq_base.validation`, which reports on the JSON profiles the same way.

The models are strict (`splitmq_base.models.STRICT`): YAML's `true` is not the integer 1, `1`
is not a boolean and "8" is not a number. Only fields whose YAML form is naturally another type
relax it (`Field(strict=False)`): paths (strings) and tuples (lists). An integer is accepted
for a float.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from splitmq_base.validation import validation_report

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)
# Every configuration model: unknown keys refused, immutable, no type coercion.


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
        heading = f"invalid {what} in {source}:"
        raise error(validation_report(exc, heading, data=data, model=model)) from exc


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
