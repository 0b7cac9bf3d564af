"""Errors of the device node."""

from __future__ import annotations

from splitmq_base.errors import ConfigurationError, SplitmqError


class DeviceError(SplitmqError):
    """Base of every error raised by `device_node`."""


class ConfigError(DeviceError, ConfigurationError):
    """A device configuration file that is missing, unreadable or invalid.

    The message names the file and, for a validation error, every bad key with its dotted path.
    """


class SourceError(DeviceError, ConfigurationError):
    """An image source that cannot produce images."""


class EmptySourceError(SourceError):
    """A source with no images at all (an empty folder, or one whose every file was unreadable)."""


class MissingSourceError(SourceError):
    """A source path that does not exist or is not a folder."""


class UnreadableImageError(SourceError):
    """An image file that Pillow cannot decode."""


class UnknownSourceError(SourceError):
    """A source kind that is not registered."""


class SourceRegistrationError(SourceError, ValueError):
    """A source kind that cannot be registered (not an identifier, or taken). Also a
    ValueError, as it was before the package had its own error."""


class ModelMismatchError(DeviceError, ConfigurationError):
    """A shared model instance that is not the model the device configuration names."""


class PolicyError(DeviceError, ConfigurationError):
    """A split policy that cannot be built from the configuration."""


class LinkError(DeviceError):
    """The device's MQTT link failed (cannot connect, not started, ...)."""


class NotConnectedError(LinkError):
    """A publish attempted while the link is down: the request runs locally instead."""


class PolicyRegistrationError(PolicyError, ValueError):
    """A policy kind that cannot be registered (taken). Also a ValueError, as it was before
    the package had its own error."""
