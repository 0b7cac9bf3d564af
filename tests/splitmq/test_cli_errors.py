"""Command-line entry points: one error line and a documented exit code, a fast `--help`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import splitmq
from edge_worker.cli import main as worker_main
from splitmq_base.cli import EXIT_CONFIG


def test_a_missing_tls_ca_file_is_one_line_and_the_config_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-ca.pem"
    config = tmp_path / "worker.yaml"
    config.write_text(
        f"broker: {{host: 127.0.0.1, port: 1, tls: {{ca_certs: {missing}}}}}\nrunner: echo\n"
    )
    assert worker_main(["--config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"edge-worker: error: tls.ca_certs: file not found: {missing}"
    ]
    assert "Traceback" not in err


@pytest.mark.integration  # runs `python -m splitmq.cli` in a fresh interpreter
def test_help_answers_without_importing_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "splitmq.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout and "worker" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "torch" not in imported and "paho" not in imported


@pytest.mark.integration  # runs `python -m splitmq.cli` in a fresh interpreter
def test_version_is_the_packages() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "splitmq.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"splitmq {splitmq.__version__}"


def test_the_old_broker_host_flag_still_works() -> None:
    import argparse

    from edge_worker.cli import add_worker_arguments

    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    args = parser.parse_args(["--broker-host", "h", "--broker-port", "5"])
    assert (args.host, args.port) == ("h", 5)
    assert "--broker-host" not in parser.format_help()
