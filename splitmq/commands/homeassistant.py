"""`splitmq homeassistant remove NODE...`: withdraw decommissioned nodes from Home Assistant.

An empty retained payload on a node's discovery topic makes Home Assistant remove the device and
its entities; the node's retained status, state and telemetry are cleared too, so nothing
recreates it.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from mqtt_session.session import MqttSession
from schemas.discovery import DEFAULT_DISCOVERY_PREFIX, HomeAssistantSettings
from splitmq.monitoring.cli_args import add_watch_arguments, watch_settings
from splitmq_base.errors import SplitmqError

ACK_TIMEOUT_S = 5.0


class RemoveError(SplitmqError):
    """The broker did not acknowledge a removal."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "homeassistant", help="withdraw decommissioned nodes from Home Assistant"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    remove = actions.add_parser("remove", help="clear the retained discovery config of nodes")
    add_watch_arguments(remove)
    remove.add_argument("nodes", nargs="+", metavar="NODE", help="worker or device ids")
    remove.add_argument(
        "--discovery-prefix", default=DEFAULT_DISCOVERY_PREFIX, help="Home Assistant's prefix"
    )
    remove.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings, topics = watch_settings(args)
    ha = HomeAssistantSettings(discovery_prefix=args.discovery_prefix)
    session = MqttSession(settings, client_id=f"splitmq-ha-remove-{uuid.uuid4().hex[:8]}")
    session.start(wait_s=ACK_TIMEOUT_S)
    try:
        for node in args.nodes:
            cleared = [ha.config_topic(node), topics.status(node), topics.device_state(node),
                       topics.telemetry(node)]  # fmt: skip
            infos = [session.publish(topic, b"", retain=True) for topic in cleared]
            for info in infos:
                info.wait_for_publish(ACK_TIMEOUT_S)
                if not info.is_published():
                    raise RemoveError(f"the broker did not acknowledge the removal of {node}")
            print(f"removed {node} ({ha.config_topic(node)})")
    finally:
        session.stop(timeout_s=1.0)
    return 0
