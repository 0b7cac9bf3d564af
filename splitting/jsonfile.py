"""Reading the JSON profiles splitting keeps on disk (device and server profiles).

Profiles are validated into strict pydantic models: 3.9 is not an integer, "false" is not a
boolean, and an unknown key is refused; every problem is one `ProfileError` naming each bad
key as a dotted path (`splits.3.candidate: ...`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from splitmq_base.validation import validation_report
from splitting.errors import ProfileError

#: Every profile model: unknown keys refused, immutable, no type coercion.

Profile = TypeVar("Profile", bound=BaseModel)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in the file at `path`; ProfileError names the `what` and the file."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ProfileError(f"cannot read {what} {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{what} {path} must hold a JSON object")
    return data


def validate_json_data(model: type[Profile], data: Any, *, what: str) -> Profile:
    """`data` (decoded JSON) validated into `model` as JSON: arrays may fill tuples, nothing
    else is converted. ProfileError lists each bad key of the `what`."""
    try:
        return model.model_validate_json(json.dumps(data))
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, ValidationError):  # not JSON at all (an object, a NaN key)
            raise ProfileError(f"malformed {what}: {exc}") from exc
        report = validation_report(exc, f"malformed {what}:", data=data, spelling="json")
        raise ProfileError(report) from exc
