"""Packages import downward only. A package may import its own modules and those of the layers
below it, never a layer above or a sibling of its own layer:

    splitmq_base  <-  schemas  <-  splitting, mqtt_session  <-  device_node, edge_worker, broker
                                                                                <-  splitmq

Broker provisioning (`broker`) sits beside the runtimes, so a device or a worker never loads it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "splitmq_base": 0,
    "schemas": 1,
    "splitting": 2,
    "mqtt_session": 2,
    "device_node": 3,
    "edge_worker": 3,
    "broker": 3,
    "splitmq": 4,
}


def imported_packages(path: Path) -> set[str]:
    """The project's top-level packages that the module at `path` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(LAYERS)
    return found


def violations() -> list[str]:
    wrong = []
    for package, layer in LAYERS.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for other in imported_packages(path) - {package}:
                if LAYERS[other] >= layer:
                    wrong.append(f"{path.relative_to(ROOT)} imports {other}")
    return wrong


def test_no_package_imports_upward_or_sideways() -> None:
    assert violations() == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import numpy\nfrom splitmq.demo import run_demo\nfrom schemas import x\n")
    assert imported_packages(module) == {"splitmq", "schemas"}
