"""Reading the JSON profiles splitting keeps on disk (device and server profiles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from splitting.errors import ProfileError


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
