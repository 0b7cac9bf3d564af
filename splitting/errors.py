"""Errors of the split engine."""

from splitmq_base.errors import ConfigurationError
from splitmq_base.validation import did_you_mean


class SplittingError(ConfigurationError):
    """Base of every error raised by `splitting`. It has no network I/O, so reaching a CLI it
    means a bad model, split, weights, profile or trace: the configuration exit code."""


class UnregisteredModelError(SplittingError, KeyError):
    """A model name that is not in the model registry."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        super().__init__(
            f"unknown model {name!r}{did_you_mean(name, available)}; "
            f"registered models: {', '.join(available)}"
        )

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class ModelRegistrationError(SplittingError):
    """A model spec that cannot be registered (duplicate name, bad block list, ...)."""


class WeightsUnavailableError(SplittingError):
    """Requested weights are not on this machine (and splitmq never downloads them)."""


class WeightsLoadError(SplittingError):
    """A weights file exists but does not fit the model (wrong keys or shapes, unreadable)."""


class InvalidSplitError(SplittingError, ValueError):
    """A split index outside [0, n] for the model."""


class InvalidInputError(SplittingError, ValueError):
    """An image or tensor with the wrong dtype, rank or shape for the model."""


class MissingExtraError(SplittingError):
    """An optional dependency is not installed; the message names the pip extra to add."""


class ProfileError(SplittingError):
    """A profile file or dictionary that is malformed or belongs to another model."""


class SplitPolicyError(SplittingError, ValueError):
    """A split policy built with options it cannot take (a bad split, race mode, deadline).
    Also a ValueError, as it was before the package had its own error."""
