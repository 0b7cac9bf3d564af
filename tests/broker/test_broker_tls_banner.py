"""A TLS broker started from a `broker init` profile says mqtts:// and starts with a clean log:
its readiness check does not leave an SSL error behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker.launcher import free_port

SPLITMQ = str(Path(sys.executable).parent / "splitmq")


def test_a_tls_broker_says_mqtts_and_logs_no_ssl_error() -> None:
    # Not pytest's tmp_path: mosquitto runs as its own account when root starts it, and must
    # reach the profile through the folders above it.
    tmp_path = Path(tempfile.mkdtemp(prefix="splitmq-tls-banner-"))
    os.chmod(tmp_path, 0o711)
    try:
        _check_banner(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _check_banner(tmp_path: Path) -> None:
    port = free_port()
    init = subprocess.run(
        [SPLITMQ, "broker", "init", str(tmp_path / "site"), "--device", "cam", "--worker", "w",
         "--port", str(port)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    process = subprocess.Popen(
        [SPLITMQ, "broker", "--config", str(tmp_path / "site" / "mosquitto.conf"),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.startswith(f"broker running at mqtts://127.0.0.1:{port} ")
    assert "running" in out and "SSL" not in out + err and "failed" not in out
