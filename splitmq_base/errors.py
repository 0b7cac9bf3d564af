"""The one error root of splitmq.

Every package base (`SchemaError`, `SplittingError`, `MqttSessionError`, `BrokerError`,
`DeviceError`, `WorkerError`) and the application's own errors derive from `SplitmqError`, so a
CLI catches one class. Errors say what went wrong, not how a process should exit: mapping them to
exit codes is the command line's job (`splitmq_base.cli.exit_code`). This module imports nothing.
"""


class SplitmqError(Exception):
    """Root of every error splitmq raises on purpose.

    The application package (demo, benchmarks, simulator) raises it, or a subclass, directly.
    """


class ConfigurationError(SplitmqError):
    """Mixin base for errors that mean "the input or configuration is wrong"."""
