"""YAML configuration files validated into pydantic models, for both runtimes (and the
monitoring commands).

It sits beside `splitmq_base.errors` as a leaf module (pydantic and PyYAML only, nothing of
splitmq's), so the device and the worker import it without depending on `mqtt_session`, which
is about the connection, not about reading files.

The device and the worker read their configuration the same way: a UTF-8 YAML mapping (an
empty file means all defaults), validated into a model that rejects unknown keys. Every
problem raises the caller's own error class (its package's `ConfigError`) with a message that
names the file and each bad key as a dotted path (`policy.split: ...`).

The models are strict (`splitmq_base.models.STRICT`): YAML's `true` is not the integer 1, `1`
is not a boolean and "8" is not a number. Only fields whose YAML form is naturally another type
relax it (`Field(strict=False)`): paths (strings) and tuples (lists). An integer is accepted
for a float.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)
# Every configuration model: unknown keys refused, immutable, no type coercion.


def yaml_repr(value: Any) -> str:
    """A scalar as YAML spells it (true, null, 'text', 3), for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    return type(value).__name__


# Union members pydantic names in an error's location ("splits.int.0"); they are not keys.
_UNION_TAGS = frozenset({"int", "float", "str", "bool", "bytes", "list", "dict", "tuple", "none"})
_TAG_WITH_ARGS = re.compile(r"[a-z][a-z-]*\[.*\]")
# Members of a tagged union (the policy section's "<fixed>", "<dynamic>"): not keys either.
_UNION_MEMBER = re.compile(r"<[^<>]*>")


def key_path(loc: tuple[int | str, ...], *, last_is_key: bool = False) -> str:
    """The dotted key path of a pydantic error location, without the union-member tags it
    adds for `A | B` fields (`literal['all']`, `list[int]`): `models.0.splits.0`. With
    `last_is_key` (an unknown key), the last part is the user's key, whatever it looks like."""
    parts = [str(part) for part in loc]
    head = parts[:-1] if last_is_key else parts
    kept = [
        p
        for p in head
        if p not in _UNION_TAGS
        and not _TAG_WITH_ARGS.fullmatch(p)
        and not _UNION_MEMBER.fullmatch(p)
    ]
    if last_is_key and parts:
        kept.append(parts[-1])
    return ".".join(kept) or "(top level)"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices` to a misspelt `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold: itself, a union's members, a list's items."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if get_origin(annotation) is not None or isinstance(annotation, types.UnionType):
        for arg in get_args(annotation):
            found += _models_in(arg)
    return found


def known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> set[str]:
    """The keys a model allows beside the last part of `loc` (an error's location). Parts that
    are no field (list indices, union tags such as "<fixed>") keep the models found so far, so
    a union offers the keys of all its members."""
    current = [model]
    for part in loc[:-1]:
        inner = [
            found
            for candidate in current
            if isinstance(part, str) and part in candidate.model_fields
            for found in _models_in(candidate.model_fields[part].annotation)
        ]
        if inner:
            current = inner
    return {name for candidate in current for name in candidate.model_fields}


def validation_errors(
    error: ValidationError, model: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """Each problem as (dotted key path, reason); an unknown key of `model` gets the closest
    known one as a suggestion."""
    found = []
    for item in error.errors():
        path = key_path(item["loc"], last_is_key=item["type"] == "extra_forbidden")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
            if model is not None and item["loc"]:
                message += did_you_mean(str(item["loc"][-1]), known_keys(model, item["loc"]))
        elif item["type"].endswith("_type"):
            # Strict types: say what was given, e.g. "should be a valid integer, got true".
            message = f"{message}, got {yaml_repr(item.get('input'))}"
        found.append((path, message))
    return found


def validation_report(
    error: ValidationError, heading: str, model: type[BaseModel] | None = None
) -> str:
    """`heading`, then one line per bad key as a dotted path with pydantic's reason."""
    lines = [heading]
    lines += [f"  {path}: {message}" for path, message in validation_errors(error, model)]
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
        raise error(validation_report(exc, f"invalid {what} in {source}:", model)) from exc


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
