"""Trace-driven simulator of the device, uplink and edge server (no I/O, no MQTT)."""
