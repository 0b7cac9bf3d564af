"""The tests' one way to run an edge worker in its own process.

Like the benchmarks' launcher (splitmq.worker_process), the configuration travels as a YAML
file in a private temporary directory and the child runs `python -m edge_worker.cli` with this
interpreter. Unlike it, this yields the process itself, so a test can signal it (SIGSTOP to
freeze it, SIGKILL to kill it without a goodbye) or read its exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from edge_worker.config import WorkerConfig, save_worker_config
from splitmq.worker_process import STOP_WAIT_S

Output = int | IO[bytes] | None  # what subprocess.Popen takes for stdout and stderr


@contextlib.contextmanager
def worker_process(
    config: WorkerConfig,
    *,
    quiet: bool = True,
    env: Mapping[str, str] | None = None,
    stdout: Output = None,
    stderr: Output = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `edge-worker --config <config as YAML>` until the block ends, then stop it: resumed
    (a test may have failed while it was frozen), SIGTERM, and SIGKILL if it has not exited
    within STOP_WAIT_S. `env` adds to this process's environment; `quiet` passes `-q`."""
    with tempfile.TemporaryDirectory(prefix="splitmq-worker-") as directory:
        path = Path(directory) / "worker.yaml"
        save_worker_config(config, path)
        command = [sys.executable, "-m", "edge_worker.cli", "--config", str(path)]
        process = subprocess.Popen(
            [*command, "-q"] if quiet else command,
            env={**os.environ, **(env or {})},
            stdout=stdout,
            stderr=stderr,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Resume, terminate and reap `process`; kill it if SIGTERM is not enough."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
    try:
        process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
