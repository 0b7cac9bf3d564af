"""The broker options the watching commands share (monitor, exporter, homeassistant): the same
connection flags as `worker` and `device` (mqtt_session.options), over an optional `--config`
file with a `broker:` section (what `splitmq broker init --monitor NAME` writes)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mqtt_session.client import BrokerSettings
from mqtt_session.options import (
    ClientConfig,
    add_connection_arguments,
    load_client_config,
    with_connection_flags,
)
from schemas.topics import Topics
from splitmq.monitoring.fleet import FleetSnapshot


@dataclass(frozen=True)
class WatchTarget:
    """Where a watching command connects and which topic layout it reads."""

    settings: BrokerSettings
    topics: Topics
    discovery_prefix: str


WATCH_EPILOG = (
    "Without --config or --port the broker is 127.0.0.1:1883, MQTT's standard port. `splitmq "
    "broker` picks a free port instead and prints the flags to use (connect with: --host H "
    "--port P)."
)
EMPTY_BROKER_NOTE = " A broker holding nothing of splitmq gets a one-line warning."


def add_watch_arguments(parser: argparse.ArgumentParser, *, warns_when_empty: bool = True) -> None:
    parser.epilog = WATCH_EPILOG + (EMPTY_BROKER_NOTE if warns_when_empty else "")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML with a `broker:` section and `topic_prefix` (`splitmq broker init --monitor "
        "NAME` writes users/NAME.yaml); the flags below override it",
    )
    add_connection_arguments(parser)
    parser.add_argument(
        "--topic-prefix", help="first level(s) of every topic (the config's, else splitmq)"
    )


def watch_target(args: argparse.Namespace) -> WatchTarget:
    """Settings and topics from `--config` and the flags; bad values are configuration errors."""
    config = load_client_config(args.config) if args.config else ClientConfig()
    settings = with_connection_flags(config.broker, args)
    topics = Topics(args.topic_prefix or config.topic_prefix)  # a bad prefix: TopicError
    discovery = getattr(args, "discovery_prefix", None) or config.discovery_prefix
    Topics(discovery)  # the same level rules as splitmq's own prefix
    return WatchTarget(settings, topics, discovery)


def watch_settings(args: argparse.Namespace) -> tuple[BrokerSettings, Topics]:
    """Broker settings and topics from `--config` and the flags."""
    target = watch_target(args)
    return target.settings, target.topics


def no_fleet_warning(snapshot: FleetSnapshot, target: WatchTarget) -> str | None:
    """One line when nothing of splitmq is on the broker: no node's retained status, telemetry
    or state (every node leaves its status retained, even after it stopped), so the likely cause
    is another broker or port. None when the fleet is there."""
    if snapshot.workers or snapshot.devices:
        return None
    return (
        f"no splitmq node has published under '{target.topics.prefix}/' at "
        f"{target.settings.url}: is it the broker the nodes use? (`splitmq broker` picks a free "
        "port and prints the flags to connect with; configs and these commands default to 1883)"
    )


def warn_if_no_fleet(
    snapshot: FleetSnapshot,
    target: WatchTarget,
    *,
    prog: str,
    quiet: int,
    out: TextIO | None = None,
) -> None:
    """Print `no_fleet_warning` on stderr, unless -q."""
    warning = no_fleet_warning(snapshot, target)
    if warning is not None and not quiet:
        print(f"{prog}: warning: {warning}", file=out or sys.stderr, flush=True)
