"""Write the JSON Schemas of the JSON messages, generated from the pydantic models.

python -m schemas.generate            # (re)write schemas/json/*.schema.json
python -m schemas.generate --check    # exit 1 if any file is missing or out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.messages import (
    DeviceStateMessage,
    ModelCatalogMessage,
    ResultMessage,
    StatusMessage,
    TelemetryMessage,
)

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
MESSAGES: dict[str, type[BaseModel]] = {
    "result": ResultMessage,
    "telemetry": TelemetryMessage,
    "status": StatusMessage,
    "state": DeviceStateMessage,
    "catalog": ModelCatalogMessage,
}


def schema_of(model: type[BaseModel]) -> dict[str, object]:
    """The model's JSON Schema (draft 2020-12) as a dict."""
    return {"$schema": DIALECT, **model.model_json_schema(mode="validation")}


def render(model: type[BaseModel]) -> str:
    """The schema file's exact text: stable key order, two-space indent, final newline."""
    return json.dumps(schema_of(model), indent=2, ensure_ascii=False) + "\n"


def schema_path(name: str, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{name}.schema.json"


def stale_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Schema files that are missing or differ from what the models generate."""
    stale = []
    for name, model in MESSAGES.items():
        path = schema_path(name, directory)
        if not path.is_file() or path.read_text(encoding="utf-8") != render(model):
            stale.append(path)
    return stale


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MESSAGES.items():
        path = schema_path(name, directory)
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for path in stale:
            print(f"stale: {path} (run python -m schemas.generate)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
