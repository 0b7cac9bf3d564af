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

from device_node.errors import DeviceError
from device_node.link import DeviceLink
from edge_worker.config import ModelEntry, WorkerConfig, save_worker_config
from mqtt_session.client import BrokerSettings
from splitmq_base.errors import SplitmqError

ECHO_MODEL = "echo"  # the echo runner's model (edge_worker.runner.echo_model_info)
STOP_WAIT_S = 15.0  # a worker that has not stopped this long after SIGTERM is killed
CONNECT_WAIT_S = 10.0  # how long an observer may take to connect
EXIT_CHECK_S = 0.5  # how often a wait for the worker checks that its process still runs


def echo_worker_config(
    settings: BrokerSettings,
    *,
    worker_id: str,
    max_batch: int,
    queue_capacity: int,
    max_held_bytes: int | None = None,
) -> WorkerConfig:
    """A worker whose tail is the echo runner (the transport and fleet benchmarks measure the
    messaging, not a model): it answers at once, with no batching wait. It connects to the
    broker at `settings`' host and port only."""
    limits = {} if max_held_bytes is None else {"max_held_bytes": max_held_bytes}
    return WorkerConfig(
        broker=BrokerSettings(host=settings.host, port=settings.port),
        worker_id=worker_id,
        models=[ModelEntry(name=ECHO_MODEL)],
        runner="echo",
        device="cpu",
        max_batch=max_batch,
        max_wait_ms=0.0,
        queue_capacity=queue_capacity,
        **limits,
    )


Output = int | IO[bytes] | None  # what subprocess.Popen takes for stdout and stderr


@contextlib.contextmanager
def worker_popen(
    config: WorkerConfig,
    *,
    env: Mapping[str, str] | None = None,
    stdout: Output = None,
    stderr: Output = None,
    quiet: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `edge-worker --config <config as YAML>` until the block ends, then stop it (resumed
    if frozen, SIGTERM, then kill). Yields the process itself, so a caller can signal it
    (SIGSTOP to freeze it, SIGKILL to kill it without a goodbye). `env` adds to this process's
    environment; `quiet` passes `-q`."""
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
            _stop(process)


@contextlib.contextmanager
def worker_process(
    config: WorkerConfig,
    *,
    env: Mapping[str, str] | None = None,
    stdout: Output = None,
    quiet: bool = False,
) -> Iterator[Callable[[], int | None]]:
    """`worker_popen`, yielding only a function that gives the process's exit code once it
    has exited (None while it runs)."""
    with worker_popen(config, env=env, stdout=stdout, quiet=quiet) as process:
        yield process.poll


@contextlib.contextmanager
def connected(link: DeviceLink, *, error: type[SplitmqError]) -> Iterator[DeviceLink]:
    """`link` started (its retained worker state in), stopped when the block ends; `error`
    when it cannot connect. The benchmarks watch their workers through such an observer."""
    try:
        link.start(wait_s=CONNECT_WAIT_S)
    except DeviceError as exc:
        raise error(f"{link.device_id} cannot connect: {exc}") from exc
    try:
        yield link
    finally:
        link.stop()


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
    """Resume (a caller may have frozen it), terminate and reap `process`; kill it if SIGTERM
    is not enough."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
    try:
        process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
