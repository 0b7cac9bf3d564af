"""`splitmq exporter --listen HOST:PORT`: Prometheus metrics of the fleet over HTTP.

The metrics are collected at each scrape from what the exporter's MQTT session has seen (worker
telemetry, device state, status, the broker's $SYS figures); see README "Monitoring".
"""

from __future__ import annotations

import argparse
import errno
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from splitmq.monitoring.cli_args import add_watch_arguments, warn_if_no_fleet, watch_target
from splitmq.monitoring.exporter import FleetCollector
from splitmq.monitoring.fleet import FleetWatcher
from splitmq_base.cli import stop_on_signals
from splitmq_base.errors import ConfigurationError

DEFAULT_LISTEN = "127.0.0.1:9810"


class ListenAddressError(ConfigurationError):
    """--listen is not HOST:PORT, or nothing can listen there (the port is taken)."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "exporter",
        help="serve Prometheus metrics of workers, devices and the broker",
        description="A Prometheus exporter: subscribes to the fleet's telemetry, state and "
        "status topics and the broker's $SYS figures, and serves them on /metrics.",
    )
    add_watch_arguments(parser)
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where to serve /metrics (default {DEFAULT_LISTEN}; 0.0.0.0:PORT for all)",
    )
    parser.set_defaults(func=run)


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ListenAddressError(
            f"--listen must be HOST:PORT with a port in 1..65535, got {text!r}"
        )
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    host, port = listen_address(args.listen)
    target = watch_target(args)
    settings = target.settings
    stop = stop_on_signals()
    with FleetWatcher(settings, topics=target.topics) as watcher:
        warn_if_no_fleet(watcher.snapshot(), target, prog="splitmq exporter", quiet=args.quiet)
        registry = CollectorRegistry()
        registry.register(FleetCollector(watcher))
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            cause = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
            message = f"--listen {host}:{port}: cannot serve there: {cause}"
            raise ListenAddressError(message) from exc
        print(f"exporter serving http://{host}:{port}/metrics from {settings.url}", flush=True)
        try:
            stop.wait()
        finally:
            server.shutdown()
            thread.join(timeout=5)
    return 0
