"""The broker options the monitoring commands share (the same flags as `worker` and `device`)."""

from __future__ import annotations

import argparse

from mqtt_session.client import BrokerSettings
from mqtt_session.errors import BrokerSettingsError
from schemas.topics import Topics
from splitmq_base.cli import port_number
from splitmq_base.configfile import validate_config


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="MQTT broker host (default loopback)")
    parser.add_argument(
        "--port", type=port_number, default=1883, help="MQTT broker port (default 1883)"
    )
    parser.add_argument("--username", help="broker login, if the broker wants one")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the password of --username (kept out of `ps`)",
    )
    parser.add_argument("--topic-prefix", default="splitmq", help="first level(s) of every topic")


def watch_settings(args: argparse.Namespace) -> tuple[BrokerSettings, Topics]:
    """Broker settings and topics from the flags; invalid values raise a configuration error."""
    # The variable is read when the client is made (BrokerSettings.password_env), which names it
    # in the error when it is unset.
    data = {
        "host": args.host,
        "port": args.port,
        "username": args.username,
        "password_env": args.password_env,
    }
    settings = validate_config(
        BrokerSettings,
        {key: value for key, value in data.items() if value is not None},
        what="broker options",
        source="command line",
        error=BrokerSettingsError,
    )
    return settings, Topics(args.topic_prefix)
