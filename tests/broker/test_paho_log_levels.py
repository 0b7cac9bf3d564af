"""paho's log lines for events it recovers from reach the log at the level they deserve."""

from __future__ import annotations

import logging

from mqtt_session.client import PAHO_LOGGER


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(PAHO_LOGGER.name, level, __file__, 1, message, None, None)


def test_a_lost_socket_is_a_warning_not_an_error():
    lost = record("failed to receive on socket: [Errno 104] Connection reset by peer")
    assert PAHO_LOGGER.filter(lost)
    assert (lost.levelno, lost.levelname) == (logging.WARNING, "WARNING")


def test_the_socketless_loop_line_is_dropped_and_other_errors_stay_errors():
    assert not PAHO_LOGGER.filter(record("Client is not connected."))
    other = record("something paho cannot recover from")
    assert PAHO_LOGGER.filter(other) and other.levelno == logging.ERROR
