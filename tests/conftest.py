"""Shared fixtures: a real Mosquitto broker on a free port (never 1883), and a raw device-side
client of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.launcher import MosquittoBroker
from mqtt_session.client import BrokerSettings
from tests.support.worker_clients import Requester


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A started Mosquitto with the project's config, private to one test.

    Function scoped: a broker starts in about 20 ms, and a fresh one per test means no retained
    message, session or queue leaks from one test into the next (and restart tests can take it
    down freely).
    """
    with MosquittoBroker() as running:
        yield running


@pytest.fixture
def broker_settings(broker: MosquittoBroker) -> BrokerSettings:
    """Connection settings for the `broker` fixture."""
    return BrokerSettings(host=broker.host, port=broker.port, reconnect_max_delay_s=2)


@pytest.fixture
def requester(broker_settings: BrokerSettings) -> Iterator[Requester]:
    """A raw device-side MQTT client that publishes frames and collects the replies."""
    device = Requester(broker_settings)
    yield device
    device.close()


# Fixtures that start a Mosquitto: `broker` here, `site` (a `broker init` profile's broker in
# tests/broker/conftest.py, or a bridged site broker in tests/broker/test_bridge.py).
BROKER_FIXTURES = frozenset({"broker", "site"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts a broker through a fixture is an integration test, marked or
    not, so `make test-fast` (`-m "not integration and not slow"`) never starts one. A test
    that starts a process any other way carries the mark itself."""
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lite0_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """efficientnet-lite0 (real weights) exported once for the session: ~15 s of export."""
    from splitting.onnx_export import ensure_exported
    from splitting.registry import load_model

    return ensure_exported(load_model(), tmp_path_factory.mktemp("onnx"))


@pytest.fixture
def changed_build(lite0_export: Path, tmp_path: Path) -> Path:
    """A copy of the lite0 build whose block_03 file has its last byte changed."""
    import shutil

    from splitting.onnx_blocks import read_manifest

    copy = Path(shutil.copytree(lite0_export, tmp_path / "build"))
    block = copy / read_manifest(copy).blocks[3].name
    data = bytearray(block.read_bytes())
    data[-1] ^= 0xFF
    block.write_bytes(bytes(data))
    return copy
