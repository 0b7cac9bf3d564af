"""splitmq: dynamic split computing over MQTT.

This package is the application: CLI, demo, benchmarks and the trace simulator. It sits on top
of every other package; the base they all share is `splitmq_base`.
"""

from splitmq_base import __version__

__all__ = ["__version__"]
