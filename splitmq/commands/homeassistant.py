"""`splitmq homeassistant remove NODE...`: withdraw decommissioned nodes from Home Assistant.

An empty retained payload on a node's discovery topic makes Home Assistant remove the device and
its entities; the node's retained status, state and telemetry are cleared too, so nothing
recreates it.
"""

from __future__ import annotations

import argparse
import logging
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_session.errors import BrokerConnectError
from mqtt_session.session import MqttSession
from schemas.discovery import DEFAULT_DISCOVERY_PREFIX, HomeAssistantSettings
from splitmq.monitoring.cli_args import add_watch_arguments, watch_target
from splitmq_base.errors import ConfigurationError, SplitmqError

ACK_TIMEOUT_S = 5.0
REFUSED = 0x80  # MQTT v5 reason codes from here on are failures
LOG = logging.getLogger(__name__)


class RemoveError(SplitmqError):
    """The broker did not acknowledge a removal."""


class RemoveRefusedError(RemoveError, ConfigurationError):
    """The broker refused a removal: the login given may not write discovery configs."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "homeassistant", help="withdraw decommissioned nodes from Home Assistant"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    remove = actions.add_parser("remove", help="clear the retained discovery config of nodes")
    add_watch_arguments(remove, warns_when_empty=False)
    remove.add_argument("nodes", nargs="+", metavar="NODE", help="worker or device ids")
    remove.add_argument(
        "--discovery-prefix",
        help=f"Home Assistant's prefix (the config's, else {DEFAULT_DISCOVERY_PREFIX})",
    )
    remove.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = watch_target(args)
    topics = target.topics
    ha = HomeAssistantSettings(discovery_prefix=target.discovery_prefix)
    session = MqttSession(target.settings, client_id=f"splitmq-ha-remove-{uuid.uuid4().hex[:8]}")
    session.start(wait_s=ACK_TIMEOUT_S)
    try:
        for node in args.nodes:
            config = ha.config_topic(node)
            cleared = [config, topics.status(node), topics.device_state(node),
                       topics.telemetry(node)]  # fmt: skip
            refused = _clear_retained(session, cleared, node)
            if config in refused:
                raise RemoveRefusedError(
                    f"the broker refused to clear {config} ({refused[config]}): this login may "
                    "not withdraw nodes; use Home Assistant's (`splitmq broker init "
                    "--homeassistant NAME` writes users/NAME.yaml for --config)"
                )
            print(f"removed {node} ({config})")
            if refused:
                # Only the discovery config makes Home Assistant recreate a node; the node's own
                # retained topics are the node's (or an admin's) to clear.
                LOG.warning(
                    "%s: this login may not clear %s (%s); they stay retained",
                    node,
                    ", ".join(refused),
                    ", ".join(sorted(set(refused.values()))),
                )
    finally:
        session.stop(timeout_s=1.0)
    return 0


def _clear_retained(session: MqttSession, topics: list[str], node: str) -> dict[str, str]:
    """Publish an empty retained payload on each topic; the refused ones, with the reason."""
    futures = [(topic, session.publish_acked(topic, b"", retain=True)) for topic in topics]
    refused: dict[str, str] = {}
    for topic, future in futures:
        try:
            ack = future.result(timeout=ACK_TIMEOUT_S)
        except (FutureTimeout, BrokerConnectError) as exc:
            raise RemoveError(f"the broker did not acknowledge the removal of {node}") from exc
        if ack.reason_code >= REFUSED:
            refused[topic] = ReasonCode(PacketTypes.PUBACK, identifier=ack.reason_code).getName()
    return refused
