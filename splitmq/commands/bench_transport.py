"""`splitmq bench transport --json PATH`: loopback round trip and a QoS 1 burst."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report
from splitmq_base.cli import port_number


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "transport", help="round trip and burst over a real Mosquitto (echo tail)"
    )
    add_json_option(parser)
    parser.add_argument("--rtt-requests", type=int, default=2000, help="timed round trips")
    parser.add_argument("--burst", type=int, default=5000, help="requests in the burst")
    parser.add_argument("--devices", type=int, default=10, help="devices in the burst")
    parser.add_argument("--host", help="use this broker instead of an embedded one")
    parser.add_argument("--port", type=port_number, default=1883, help="port of --host")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mqtt_session.client import BrokerSettings
    from splitmq.bench.transport import TransportOptions, format_table, run_transport_bench

    settings = BrokerSettings(host=args.host, port=args.port) if args.host else None
    options = TransportOptions(
        rtt_requests=args.rtt_requests,
        burst_requests=args.burst,
        burst_devices=args.devices,
    )
    result = run_transport_bench(options, settings=settings)
    if not prints_json(args.json_path):
        print(format_table(result))
    write_report(result, args.json_path)
    return 0 if result.burst.lost == 0 else 1
