"""A configuration model written out as an example YAML file: every key, its real default and
its `Field` description as a comment, so the example cannot drift from the model.

    text = example_yaml(DeviceConfig(device_id="camera-1"), header=["# splitmq device node"])

The values are those of the instance given (a model built from its defaults), so a section
whose default differs from its model's own (the worker's broker keepalive) shows the real one.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

COMMENT_COLUMN = 28
WIDTH = 100


def yaml_scalar(value: Any) -> str:
    """`value` in YAML's flow style on one line: null, true, 'text', [int8, lossless], {}."""
    text = yaml.safe_dump(
        to_jsonable_python(value), default_flow_style=True, width=10**6, sort_keys=False
    )
    return text.strip().removesuffix("...").strip()


def _wrap(text: str, width: int) -> list[str]:
    # Flags and paths stay whole: "--tls-ca" is never cut at its hyphen.
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def _commented(line: str, comment: str | None) -> list[str]:
    """`line` with `comment` after it, wrapped onto aligned comment lines past WIDTH."""
    if not comment:
        return [line]
    column = max(COMMENT_COLUMN, len(line) + 1)
    if column > WIDTH - 30:  # a long value: the comment goes on the lines above it
        indent = len(line) - len(line.lstrip())
        wrapped = _wrap(comment, WIDTH - indent - 2)
        return [" " * indent + "# " + part for part in wrapped] + [line]
    wrapped = _wrap(comment, WIDTH - column - 2)
    lines = [f"{line:<{column}}# {wrapped[0]}"]
    lines += [" " * column + "# " + part for part in wrapped[1:]]
    return lines


def _section_lines(
    instance: BaseModel, indent: int, path: str, notes: Mapping[str, str]
) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for name, field in type(instance).model_fields.items():
        value = getattr(instance, name)
        key = f"{path}{name}"
        comment = " ".join(part for part in (field.description, notes.get(key)) if part)
        if isinstance(value, BaseModel):
            lines += _commented(f"{pad}{name}:", comment)
            lines += _section_lines(value, indent + 2, f"{key}.", notes)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            lines += _commented(f"{pad}{name}:", comment)
            for index, item in enumerate(value):
                entry = _section_lines(item, indent + 4, f"{key}.{index}.", notes)
                # The first key of each entry carries the list's dash.
                first = next(i for i, line in enumerate(entry) if not line.lstrip().startswith("#"))
                entry[first] = f"{pad}  - {entry[first][indent + 4 :]}"
                lines += entry
        else:
            lines += _commented(f"{pad}{name}: {yaml_scalar(value)}", comment)
    return lines


def example_yaml(
    instance: BaseModel, *, header: Sequence[str] = (), notes: Mapping[str, str] | None = None
) -> str:
    """`instance` as YAML with every key; `notes` adds text to a key's comment by dotted path."""
    lines = [*header, *_section_lines(instance, 0, "", notes or {})]
    return "\n".join(lines) + "\n"


def dotted_keys(data: Any, path: str = "") -> set[str]:
    """Every key of a parsed YAML mapping as a dotted path (list entries by index)."""
    keys: set[str] = set()
    if isinstance(data, Mapping):
        for name, value in data.items():
            keys.add(f"{path}{name}")
            keys |= dotted_keys(value, f"{path}{name}.")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            keys |= dotted_keys(value, f"{path}{index}.")
    return keys
