"""Watching a running fleet: the fleet view, the terminal monitor and the Prometheus exporter."""
