"""One way to connect: the broker flags every command that talks to a broker shares, and the
small config file of the commands that only watch (monitor, exporter, homeassistant).

    add_connection_arguments(parser)               # --host --port --username --password-file
                                                   # --password-env --tls-ca --tls-cert --tls-key
    settings = with_connection_flags(config.broker, args)   # the flags over a `broker:` section

The flags override the `broker:` section of the command's `--config` file, key by key: the
device's and the worker's own config, or a `ClientConfig` (what `splitmq broker init --monitor`
writes) for the watching commands. A password given by flag replaces the file's, whichever way
the file gave it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from mqtt_session.client import BrokerSettings
from mqtt_session.errors import BrokerSettingsError
from schemas.discovery import DEFAULT_DISCOVERY_PREFIX
from schemas.topics import Topics
from splitmq_base.cli import port_number
from splitmq_base.configfile import read_yaml_mapping, validate_config
from splitmq_base.models import StrictModel

CLIENT_CONFIG_WHAT = "client configuration"
# The flags that set a password, by the BrokerSettings key they set.
PASSWORD_KEYS = ("password", "password_env", "password_file")


class ClientConfig(StrictModel):
    """A client that only watches or tidies the fleet (monitor, exporter, homeassistant): where
    the broker is and the topic layout. `splitmq broker init --monitor NAME` writes one."""

    broker: BrokerSettings = Field(
        default_factory=BrokerSettings, description="broker connection (as devices and workers)"
    )
    topic_prefix: str = Field("splitmq", description="first level(s) of every topic")
    discovery_prefix: str = Field(
        DEFAULT_DISCOVERY_PREFIX, description="Home Assistant's discovery prefix"
    )

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        Topics(prefix)
        return prefix


def load_client_config(path: Path) -> ClientConfig:
    """Read and validate a client config; `BrokerSettingsError` names the file and bad keys."""
    data = read_yaml_mapping(path, what=CLIENT_CONFIG_WHAT, error=BrokerSettingsError)
    return validate_config(
        ClientConfig, data, what=CLIENT_CONFIG_WHAT, source=str(path), error=BrokerSettingsError
    )


def add_connection_arguments(
    parser: argparse.ArgumentParser, *, default_note: str = "the config's, else"
) -> None:
    """The broker flags; each overrides the matching key of the `broker:` section."""
    group = parser.add_argument_group(
        "broker connection", "override the config file's `broker:` section, key by key"
    )
    group.add_argument("--host", help=f"broker host name or address ({default_note} 127.0.0.1)")
    group.add_argument(
        "--port",
        type=port_number,
        help=f"broker port ({default_note} 1883; `splitmq broker` prints the one it chose)",
    )
    group.add_argument("--username", help="broker login (with `broker init`: the node's id)")
    secret = group.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the password (users/NAME.password of `broker init`)",
    )
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the password (kept out of `ps`)",
    )
    group.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="CA that signed the broker's cert: use TLS"
    )
    group.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="client certificate (mutual TLS)"
    )
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="private key of --tls-cert")


def connection_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `broker:` keys the flags set (none given: empty)."""
    flags = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "username": getattr(args, "username", None),
        "password_file": getattr(args, "password_file", None),
        "password_env": getattr(args, "password_env", None),
    }
    data: dict[str, Any] = {key: value for key, value in flags.items() if value is not None}
    tls = {
        "ca_certs": getattr(args, "tls_ca", None),
        "certfile": getattr(args, "tls_cert", None),
        "keyfile": getattr(args, "tls_key", None),
    }
    tls = {key: value for key, value in tls.items() if value is not None}
    if tls:
        data["tls"] = tls
    return data


def merge_broker_section(section: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`section` (a dumped `broker:`) with `overrides` applied: TLS files merge into the
    section's TLS, and a password by flag drops the section's own password keys."""
    merged = dict(section)
    if any(key in overrides for key in PASSWORD_KEYS):
        for key in PASSWORD_KEYS:
            merged[key] = None
    for key, value in overrides.items():
        if key == "tls":
            merged["tls"] = {**(merged.get("tls") or {}), **value}
        else:
            merged[key] = value
    return merged


def with_connection_flags(settings: BrokerSettings, args: argparse.Namespace) -> BrokerSettings:
    """`settings` with the connection flags of `args` applied, validated again."""
    overrides = connection_overrides(args)
    if not overrides:
        return settings
    data = merge_broker_section(settings.model_dump(), overrides)
    return validate_config(
        BrokerSettings,
        data,
        what="broker options",
        source="command line",
        error=BrokerSettingsError,
    )
