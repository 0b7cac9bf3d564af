"""Errors of the device node."""


class DeviceError(Exception):
    """Base of every error raised by `device_node`."""
