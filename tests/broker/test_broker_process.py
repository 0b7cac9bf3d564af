"""`splitmq broker` as a real process: mosquitto lives and dies with it, and says why it died."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.errors import BrokerExitedError
from broker.launcher import (
    OWNER_FILE,
    WORKDIR_PREFIX,
    MosquittoBroker,
    free_port,
    port_accepts,
    remove_orphaned_workdirs,
)
from splitmq_base.cli import EXIT_RUNTIME

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"),
]
# Generous bounds for things that happen in milliseconds; they only end a wait, never a pass.
GONE_WITHIN_S = 10.0
STARTED_WITHIN_S = 30.0
RUNNING_LINE = re.compile(r"broker running at \S+ \(pid (\d+), files in (\S+)\)")


@dataclass
class Wrapper:
    process: subprocess.Popen[str]
    mosquitto_pid: int
    workdir: Path
    port: int


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for a reaper (it no longer runs)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return _gone(pid)


@pytest.fixture
def wrapper() -> Iterator[Wrapper]:
    """`splitmq broker` in its own process, read up to its "running" line."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "splitmq.cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    found = None
    deadline = time.monotonic() + STARTED_WITHIN_S
    while found is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        found = RUNNING_LINE.search(line)
    if found is None:
        process.kill()
        pytest.fail(f"splitmq broker did not start: {process.communicate()[1]}")
    mosquitto_pid = int(found.group(1))
    # Keep draining stdout so the log echo never blocks on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    yield Wrapper(process, mosquitto_pid, Path(found.group(2)), port)
    if process.poll() is None:
        process.kill()
    process.wait(timeout=GONE_WITHIN_S)
    if not _gone(mosquitto_pid):
        os.kill(mosquitto_pid, signal.SIGKILL)


def test_sigkilling_the_wrapper_takes_mosquitto_down(wrapper: Wrapper) -> None:
    assert port_accepts("127.0.0.1", wrapper.port)
    wrapper.process.kill()
    wrapper.process.wait(timeout=GONE_WITHIN_S)
    assert _wait_gone(wrapper.mosquitto_pid), "mosquitto outlived its SIGKILLed wrapper"
    assert not port_accepts("127.0.0.1", wrapper.port)


def test_the_next_launcher_removes_a_sigkilled_wrappers_directory(wrapper: Wrapper) -> None:
    wrapper.process.kill()
    wrapper.process.wait(timeout=GONE_WITHIN_S)
    assert wrapper.workdir.is_dir(), "nothing can clean up after SIGKILL itself"
    with MosquittoBroker() as fresh:
        assert fresh.workdir.is_dir()
    assert not wrapper.workdir.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_stops_mosquitto_and_removes_the_directory(
    wrapper: Wrapper, signum: signal.Signals
) -> None:
    wrapper.process.send_signal(signum)
    assert wrapper.process.wait(timeout=GONE_WITHIN_S) == 0
    assert _gone(wrapper.mosquitto_pid)
    assert not wrapper.workdir.exists()


def test_mosquitto_dying_fails_the_wrapper_with_its_status_and_log(wrapper: Wrapper) -> None:
    os.kill(wrapper.mosquitto_pid, signal.SIGKILL)
    assert wrapper.process.wait(timeout=GONE_WITHIN_S) == EXIT_RUNTIME
    assert wrapper.process.stderr is not None
    err = wrapper.process.stderr.read()
    assert f"mosquitto (pid {wrapper.mosquitto_pid})" in err
    assert "was killed by SIGKILL" in err
    assert "its log ends with" in err and "mosquitto version" in err
    assert not wrapper.workdir.exists()


def test_mosquitto_stopping_by_itself_is_still_a_failure(wrapper: Wrapper) -> None:
    # SIGTERM to mosquitto alone makes it exit 0: the wrapper did not ask for that.
    os.kill(wrapper.mosquitto_pid, signal.SIGTERM)
    assert wrapper.process.wait(timeout=GONE_WITHIN_S) == EXIT_RUNTIME
    assert wrapper.process.stderr is not None
    assert "exited with code 0" in wrapper.process.stderr.read()


def test_check_running_reports_a_dead_broker_once() -> None:
    with MosquittoBroker() as broker:
        broker.check_running()
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGKILL)
        deadline = time.monotonic() + GONE_WITHIN_S
        while broker.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(BrokerExitedError, match="was killed by SIGKILL"):
            broker.check_running()
        broker.check_running()  # reported; a later stop() or close() is quiet


def test_a_broker_started_from_a_thread_outlives_that_thread() -> None:
    # The kernel's parent-death signal follows the forking *thread*: a broker (re)started from a
    # short-lived thread must not die when that thread ends.
    broker = MosquittoBroker()
    starter = threading.Thread(target=broker.start)
    starter.start()
    starter.join()
    try:
        assert broker.pid is not None
        time.sleep(0.3)
        assert broker.is_running()
        assert port_accepts(broker.host, broker.port)
    finally:
        broker.close()


def test_orphan_sweep_leaves_live_and_foreign_directories_alone(tmp_path: Path) -> None:
    live = tmp_path / f"{WORKDIR_PREFIX}live"
    foreign = tmp_path / f"{WORKDIR_PREFIX}foreign"
    unmarked = tmp_path / f"{WORKDIR_PREFIX}unmarked"
    dead = tmp_path / f"{WORKDIR_PREFIX}dead"
    for directory in (live, foreign, unmarked, dead):
        directory.mkdir()
    host = socket.gethostname()
    (live / OWNER_FILE).write_text(f"{host} {os.getppid()}\n")
    (foreign / OWNER_FILE).write_text("another-host 1999999\n")
    (dead / OWNER_FILE).write_text(f"{host} {_dead_pid()}\n")
    assert remove_orphaned_workdirs(tmp_path) == [dead]
    assert live.is_dir() and foreign.is_dir() and unmarked.is_dir() and not dead.exists()


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
