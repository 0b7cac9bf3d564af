"""Lifecycles that guard themselves: a second start, or a start after stop, is a clear error
instead of a second compute thread or a worker that rejects everything."""

from __future__ import annotations

import pytest

from edge_worker.errors import WorkerStateError
from edge_worker.telemetry import TelemetryReporter, WorkerStats
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from mqtt_session.errors import SessionStateError
from mqtt_session.session import MqttSession
from tests.support.scaled_model import worker_config

pytestmark = pytest.mark.integration


def test_a_worker_starts_once_and_not_again_after_stop(broker_settings: BrokerSettings) -> None:
    config = worker_config(broker_settings, models=[{"name": "echo"}], runner="echo")
    worker = EdgeWorker(config).start()
    try:
        with pytest.raises(WorkerStateError, match="already started"):
            worker.start()
    finally:
        worker.stop()
    with pytest.raises(WorkerStateError, match="build a new one"):
        worker.start()
    worker.stop()  # a second stop is harmless


def test_a_session_starts_once_and_not_again_after_stop(broker_settings: BrokerSettings) -> None:
    session = MqttSession(broker_settings, client_id="lifecycle")
    session.start(wait_s=10)
    with pytest.raises(SessionStateError, match="already started"):
        session.start(wait_s=10)
    session.stop()
    with pytest.raises(SessionStateError, match="build a new one"):
        session.start(wait_s=10)


def test_a_telemetry_reporter_runs_one_thread() -> None:
    reporter = TelemetryReporter(
        WorkerStats(window_s=1.0),
        worker_id="w",
        device="cpu",
        models={"m": [0]},
        queue_capacity=8,
        max_batch=1,
        interval_s=1.0,
        min_gap_s=0.1,
        queue_depth=lambda: 0,
        publish=lambda payload: None,
    )
    reporter.start()
    try:
        with pytest.raises(WorkerStateError, match="already started"):
            reporter.start()
    finally:
        reporter.stop()
