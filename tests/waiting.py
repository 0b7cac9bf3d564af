"""Waiting in tests for state that another thread or process changes."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(condition: Callable[[], object], timeout_s: float = 20.0, what: str = "") -> None:
    """Return once `condition()` is truthy; fail naming `what` after `timeout_s`. For state
    without an event to wait on (another process, the broker); prefer an event where one exists."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or condition}")
        time.sleep(POLL_S)
