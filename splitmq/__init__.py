"""splitmq: dynamic split computing over MQTT (the application: CLI, demo, benchmarks, simulator)."""

__version__ = "0.1.0"
