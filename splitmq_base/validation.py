"""One report of a pydantic `ValidationError` for everything splitmq validates: the YAML
configuration files, the JSON profiles and the policy's keyword options.

A report is a heading (the caller's: what was read and from which file), then one line per
problem: the bad key as a dotted path the user can find in the file (`policy.options.race`,
`splits.3.k`), and pydantic's reason, said plainly: an unknown key is "unknown key", a
validator's complaint loses pydantic's "Value error, " prefix, and a value of the wrong type
is quoted back as the file spells it ("got true" in YAML, "got \"18\"" in JSON).

A leaf module (pydantic only), so splitting and both runtimes share it.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

#: How the file being reported on writes a value: YAML (`true`, `'text'`) or JSON (`"text"`).
Spelling = Literal["yaml", "json"]

# Union members pydantic names in an error's location ("splits.int.0"); they are not keys.
_UNION_TAGS = frozenset({"int", "float", "str", "bool", "bytes", "list", "dict", "tuple", "none"})
_TAG_WITH_ARGS = re.compile(r"[a-z][a-z-]*\[.*\]")
# Members of a tagged union (the policy section's "<fixed>", "<dynamic>"): not keys either.
_UNION_MEMBER = re.compile(r"<[^<>]*>")
# Where no validated data is given, a part is judged by its looks alone.
_NO_DATA: Final = object()
# Error types whose reason is about the value given: the report quotes it back.
_WRONG_VALUE_SUFFIXES = ("_type", "_parsing", "from_float")


def spelled(value: Any, spelling: Spelling = "yaml") -> str:
    """A scalar as the file spells it (YAML: true, null, 'text', 3; JSON: true, null, "text",
    3); anything else by its kind, so a report never dumps a whole list back."""
    if value is None or isinstance(value, bool | int | float | str):
        if spelling == "json":
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "null"
        return repr(value) if isinstance(value, str) else str(value)
    return type(value).__name__


def key_path(loc: tuple[int | str, ...], *, last_is_key: bool = False, data: Any = _NO_DATA) -> str:
    """The dotted key path of a pydantic error location, without the union-member tags it
    adds for `A | B` fields (`literal['all']`, `list[int]`): `models.0.splits.0`.

    A part that names a key or index of the validated `data` is the user's, even if it looks
    like a tag (a profile's `bytes`, a config's `int`); with `last_is_key` (an unknown key, a
    missing one) so is the last part, whatever it looks like."""
    parts = [str(part) for part in loc]
    kept: list[str] = []
    node = data
    for index, (raw, part) in enumerate(zip(loc, parts, strict=True)):
        found, node = _child(node, raw)
        last = index == len(parts) - 1
        if found or (last and last_is_key) or not _is_union_tag(part):
            kept.append(part)
    return ".".join(kept) or "(top level)"


def _is_union_tag(part: str) -> bool:
    return (
        part in _UNION_TAGS
        or _TAG_WITH_ARGS.fullmatch(part) is not None
        or _UNION_MEMBER.fullmatch(part) is not None
    )


def _child(node: Any, part: int | str) -> tuple[bool, Any]:
    """Whether `part` is a key (or index) of `node`, and what it holds there. A part that is
    not (a union tag, a missing key) leaves the walk where it is, for the next part."""
    if isinstance(node, Mapping) and part in node:
        return True, node[part]
    is_list = isinstance(node, Sequence) and not isinstance(node, str)
    if is_list and isinstance(part, int) and -len(node) <= part < len(node):
        return True, node[part]
    return False, node


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices` to a misspelt `word`, else ''."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=len(options) or 1, cutoff=0.6)
    if not close:
        return ""
    # Equally close names (lite0, lite1, lite2) suggest the first in order, not the last.
    best = max(_similarity(word, name) for name in close)
    return f" (did you mean {min(n for n in close if _similarity(word, n) == best)!r}?)"


def _similarity(word: str, name: str) -> float:
    return difflib.SequenceMatcher(None, word, name).ratio()


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
    error: ValidationError,
    *,
    data: Any = _NO_DATA,
    spelling: Spelling = "yaml",
    model: type[BaseModel] | None = None,
) -> list[tuple[str, str]]:
    """Each problem as (dotted key path, reason), a wrong value quoted back in `spelling`.
    `data`, what was validated, tells the user's keys from pydantic's union tags; with the
    `model` it was validated into, an unknown key gets the closest known one suggested."""
    found = []
    for item in error.errors():
        unknown = item["type"] == "extra_forbidden"
        named = unknown or item["type"] == "missing"  # the last part is a key the user knows
        path = key_path(item["loc"], last_is_key=named, data=data)
        message = "unknown key" if unknown else item["msg"].removeprefix("Value error, ")
        if unknown and model is not None and item["loc"]:
            message += did_you_mean(str(item["loc"][-1]), known_keys(model, item["loc"]))
        if item["type"].endswith(_WRONG_VALUE_SUFFIXES):
            # Strict types: say what was given, e.g. "should be a valid integer, got true".
            message = f"{message}, got {spelled(item.get('input'), spelling)}"
        found.append((path, message))
    return found


def validation_report(
    error: ValidationError,
    heading: str,
    *,
    data: Any = _NO_DATA,
    spelling: Spelling = "yaml",
    model: type[BaseModel] | None = None,
) -> str:
    """`heading` (say what was read and the file it came from), then one line per bad key:
    its dotted path and reason (see `validation_errors`)."""
    found = validation_errors(error, data=data, spelling=spelling, model=model)
    return "\n".join([heading, *(f"  {path}: {message}" for path, message in found)])
