"""Packages import downward only. A package may import its own modules and those of the layers
below it, never a layer above or a sibling of its own layer:

    splitmq_base  <-  schemas  <-  splitting, mqtt_session  <-  device_node, edge_worker, broker
                                                                                <-  splitmq

Broker provisioning (`broker`) sits beside the runtimes, so a device or a worker never loads it.
The tests follow one rule of their own: what they share lives in tests/support, so a test
module (or a conftest, or a support module) imports tests.support and nothing else of tests/.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SUPPORT = "tests.support"
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


def imported_test_modules(path: Path) -> set[str]:
    """The modules of tests/ that the module at `path` imports (anywhere in it); a relative
    import counts as one, named by its dots."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom) and node.module == "tests":
            found |= {f"tests.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} if node.module.startswith("tests.") else set()
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tests.")}
    return found


def outside_support(path: Path) -> set[str]:
    """The modules of tests/ other than tests.support that the module at `path` imports."""
    return {
        name
        for name in imported_test_modules(path)
        if name != SUPPORT and not name.startswith(SUPPORT + ".")
    }


def imports_of_test_modules() -> list[str]:
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in sorted(outside_support(path)):
            wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    return wrong


def test_tests_import_only_the_support_package_of_tests() -> None:
    assert imports_of_test_modules() == []


def test_the_rule_catches_an_import_of_another_test_module(tmp_path: Path) -> None:
    module = tmp_path / "test_m.py"
    module.write_text(
        "import tests.support.waiting\n"
        "from tests.support.frames import build_frame\n"
        "from tests.splitting.test_latency import toy_device\n"
        "from tests import conftest\n"
        "from .test_other import helper\n"
        "import tests.edge_worker.test_worker\n"
        "from splitting.latency import predict\n"
    )
    assert outside_support(module) == {
        "tests.splitting.test_latency",
        "tests.conftest",
        ".test_other",
        "tests.edge_worker.test_worker",
    }
