"""An edge worker in its own process, started from a `WorkerConfig` object.

The benchmarks run their workers as deployed: one process each, so no GIL is shared with the
devices they measure. The configuration travels as a YAML file in a private temporary
directory (`edge-worker --config`), never as a made-up command line, and the child runs
`python -m edge_worker.cli` with this interpreter and environment: the same code as the
parent, installed or not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from edge_worker.config import WorkerConfig, save_worker_config
from splitmq.errors import SplitmqError

STOP_WAIT_S = 15.0  # a worker that has not stopped this long after SIGTERM is killed
EXIT_CHECK_S = 0.5  # how often a wait for the worker checks that its process still runs


@contextlib.contextmanager
def worker_process(
    config: WorkerConfig,
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = None,
    quiet: bool = False,
) -> Iterator[Callable[[], int | None]]:
    """Run `edge-worker --config <config as YAML>` until the block ends (SIGTERM, then kill).

    Yields a function that gives the process's exit code once it has exited (None while it
    runs). `env` adds to this process's environment; `quiet` passes `-q`.
    """
    with tempfile.TemporaryDirectory(prefix="splitmq-worker-") as directory:
        path = Path(directory) / "worker.yaml"
        save_worker_config(config, path)
        command = [sys.executable, "-m", "edge_worker.cli", "--config", str(path)]
        process = subprocess.Popen(
            [*command, "-q"] if quiet else command,
            env={**os.environ, **(env or {})},
            stdout=stdout,
        )
        try:
            yield process.poll
        finally:
            _stop(process)


def wait_until_serving(
    serving: Callable[[float], bool],
    exited: Callable[[], int | None],
    *,
    timeout_s: float,
    error: type[SplitmqError],
    what: str = "worker",
) -> None:
    """Return once `serving(wait_s)` (itself waiting up to wait_s, e.g. on the retained
    telemetry) says the worker serves; `error` when its process exits first, or after
    `timeout_s`. It waits in slices, so a process that dies while starting is reported at once."""
    deadline = time.monotonic() + timeout_s
    while not serving(EXIT_CHECK_S):
        code = exited()
        if code is not None:
            raise error(f"the {what} process exited with code {code}")
        if time.monotonic() > deadline:
            raise error(f"the {what} did not appear within {timeout_s:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
