"""Fixtures of the runtime tests (the broker fixtures live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.client import BrokerSettings
from tests.support.secure_site import site  # noqa: F401  (a broker from `broker init`)
from tests.support.worker_clients import Requester


@pytest.fixture
def requester(broker_settings: BrokerSettings) -> Iterator[Requester]:
    """A raw device-side MQTT client that publishes frames and collects the replies."""
    device = Requester(broker_settings)
    yield device
    device.close()
