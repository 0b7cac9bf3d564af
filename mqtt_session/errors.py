"""Errors of the MQTT runtime: connection settings, connecting, the session's lifecycle."""

from __future__ import annotations

from splitmq_base.errors import ConfigurationError, SplitmqError


class MqttSessionError(SplitmqError):
    """Base of every error raised by `mqtt_session`."""


class BrokerSettingsError(MqttSessionError, ConfigurationError):
    """Connection settings are invalid (e.g. a TLS file that does not exist)."""


class BrokerConnectError(MqttSessionError):
    """A client could not connect to the broker within its timeout."""


class SessionStateError(MqttSessionError):
    """A session lifecycle call out of order: a second `start()`, or `start()` after `stop()`
    (a stopped session has disconnected for good; build a new one)."""
