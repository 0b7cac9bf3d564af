"""Errors of broker provisioning: the launcher, the password and ACL files, the secure profile."""

from __future__ import annotations

from splitmq_base.errors import ConfigurationError, SplitmqError

INSTALL_HINT = (
    "install it with `sudo apt-get install mosquitto` (Debian/Ubuntu), "
    "`brew install mosquitto` (macOS) or `sudo dnf install mosquitto` (Fedora)"
)


class BrokerError(SplitmqError):
    """Base of every error raised by `broker`."""


class MosquittoNotFoundError(BrokerError):
    """The `mosquitto` binary is not on PATH nor in /usr/sbin or /usr/local/sbin."""

    def __init__(self, searched: list[str]) -> None:
        super().__init__(
            f"mosquitto broker binary not found (searched PATH and {', '.join(searched)}): "
            + INSTALL_HINT
        )


class MosquittoPasswdNotFoundError(BrokerError):
    """`mosquitto_passwd`, needed to hash a password file, is not installed."""

    def __init__(self) -> None:
        super().__init__("mosquitto_passwd not found; it ships with the broker: " + INSTALL_HINT)


class BrokerStartError(BrokerError):
    """Mosquitto exited or did not accept connections in time; the message quotes its log."""


class PortInUseError(BrokerStartError, ConfigurationError):
    """Mosquitto could not listen: another program has the port (a port the user chose)."""


class BrokerExitedError(BrokerError):
    """A running mosquitto exited on its own; the message gives its status and log tail."""


class BrokerConfigError(BrokerError, ConfigurationError):
    """A broker configuration template cannot be rendered (missing file or placeholder)."""


class SecureProfileError(BrokerError, ConfigurationError):
    """`splitmq broker init` cannot write the profile (bad name, existing profile, no plugin)."""


class AuthFileError(BrokerError, ConfigurationError):
    """The password or ACL file could not be written."""


class BrokerExtraMissingError(BrokerError, ConfigurationError):
    """A provisioning command needs a package of the `broker` extra, which is not installed."""

    def __init__(self, task: str, package: str) -> None:
        super().__init__(f"{task} needs the {package!r} package: pip install 'splitmq[broker]'")
