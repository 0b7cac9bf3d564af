"""splitmq: dynamic split computing over MQTT.

This package is the application: CLI, demo, benchmarks and the trace simulator.
"""

__version__ = "0.1.0"
