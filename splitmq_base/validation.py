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

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import ValidationError

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


def validation_report(
    error: ValidationError, heading: str, *, data: Any = _NO_DATA, spelling: Spelling = "yaml"
) -> str:
    """`heading` (say what was read and the file it came from), then one line per bad key:
    its dotted path and pydantic's reason, with a wrong value quoted back in `spelling`.
    `data`, what was validated, tells the user's keys from pydantic's union tags."""
    lines = [heading]
    for item in error.errors():
        unknown = item["type"] == "extra_forbidden"
        named = unknown or item["type"] == "missing"  # the last part is a key the user knows
        path = key_path(item["loc"], last_is_key=named, data=data)
        message = "unknown key" if unknown else item["msg"].removeprefix("Value error, ")
        if item["type"].endswith(_WRONG_VALUE_SUFFIXES):
            # Strict types: say what was given, e.g. "should be a valid integer, got true".
            message = f"{message}, got {spelled(item.get('input'), spelling)}"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)
