"""`cryptography` belongs to broker provisioning (the `broker` extra): devices and workers run
without it, and `splitmq broker init` without it says which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from splitmq_base.cli import EXIT_CONFIG

# Every module of both runtimes, imported the way a node process would.
IMPORT_NODES = """
import importlib, json, pkgutil, sys
import device_node, edge_worker
for package in (device_node, edge_worker):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "cryptography")))
"""

# `None` in sys.modules makes every `import cryptography` fail, as on an install without it.
INIT_WITHOUT_CRYPTOGRAPHY = """
import sys
sys.modules["cryptography"] = None
from splitmq.cli import main
sys.exit(main(["broker", "init", sys.argv[1], "--device", "cam-1", "--plugin", "/dev/null"]))
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_devices_and_workers_never_import_cryptography() -> None:
    done = run_python(IMPORT_NODES)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_broker_init_without_cryptography_names_the_extra_and_writes_nothing(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "site"
    done = run_python(INIT_WITHOUT_CRYPTOGRAPHY, str(profile))
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert "pip install 'splitmq[broker]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not profile.exists()
