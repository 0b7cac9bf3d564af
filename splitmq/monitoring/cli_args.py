"""The broker options the watching commands share (monitor, exporter, homeassistant): the same
connection flags as `worker` and `device` (mqtt_session.options), over an optional `--config`
file with a `broker:` section (what `splitmq broker init --monitor NAME` writes)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mqtt_session.client import BrokerSettings
from mqtt_session.options import (
    ClientConfig,
    add_connection_arguments,
    load_client_config,
    with_connection_flags,
)
from schemas.topics import Topics


@dataclass(frozen=True)
class WatchTarget:
    """Where a watching command connects and which topic layout it reads."""

    settings: BrokerSettings
    topics: Topics
    discovery_prefix: str


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
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
