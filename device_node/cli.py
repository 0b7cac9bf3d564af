"""`device-node --config FILE` (also `splitmq device --config FILE`): run one device node.

    splitmq config example device > device.yaml && device-node --config device.yaml

Flags override the file's top-level settings for a quick try; the file stays the reference for
real deployments (broker address, credentials, TLS, topic prefix, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mqtt_session.options import add_connection_arguments, with_connection_flags
from splitmq_base.cli import (
    add_verbosity,
    configure_logging,
    guarded,
    stop_on_signals,
)

# How long start-up waits for the broker and the workers' retained state before the first
# request: a LAN broker answers in milliseconds; past this the device starts locally.
START_WAIT_S = 3.0

if TYPE_CHECKING:
    from device_node.config import DeviceConfig
    from device_node.records import ResultRecord


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        type=Path,
        help="device YAML file (an example with every key: splitmq config example device)",
    )
    parser.add_argument("--device-id", help="override device_id")
    parser.add_argument("--requests", type=int, help="stop after N requests")
    parser.add_argument("--rate", dest="rate_hz", type=float, help="requests per second")
    parser.add_argument("--split", type=int, help="use a fixed split k")
    parser.add_argument("--policy", choices=("fixed", "dynamic"), help="override policy.kind")
    parser.add_argument("--codec", help="override codec")
    parser.add_argument("--deadline-ms", type=float, help="override deadline_ms")
    parser.add_argument("--folder", type=Path, help="classify the images of this folder")
    parser.add_argument("--slowdown", type=float, help="override slowdown")
    parser.add_argument("--jsonl", type=Path, help="append one JSON record per request here")
    add_connection_arguments(parser)
    add_verbosity(parser)


def config_from_args(args: argparse.Namespace) -> DeviceConfig:
    from device_node.config import load_device_config, policy_override, with_overrides

    config = load_device_config(args.config)
    data: dict[str, Any] = {
        "device_id": args.device_id,
        "requests": args.requests,
        "rate_hz": args.rate_hz,
        "codec": args.codec,
        "deadline_ms": args.deadline_ms,
        "slowdown": args.slowdown,
    }
    data["broker"] = with_connection_flags(config.broker, args)
    if args.split is not None or args.policy is not None:
        data["policy"] = policy_override(config.policy, kind=args.policy, split=args.split)
    if args.folder is not None:
        data["source"] = {**config.source.model_dump(), "kind": "folder", "path": args.folder}
    return with_overrides(config, data)


def run(args: argparse.Namespace) -> int:
    """Run the device; a splitmq error propagates to the caller's `guarded`."""
    # Imported here so that `--help` answers without torch.
    from device_node.runtime import build_device, load_device_model, shaped_uplink
    from device_node.sources import build_source

    configure_logging(args)
    config = config_from_args(args)
    model = load_device_model(config)
    source = build_source(config.source)
    stop = stop_on_signals()
    printer = _RecordPrinter(sys.stdout, args.jsonl, quiet=args.quiet)
    try:
        # With `trace` set, the device reaches its broker through a trace-driven shaper.
        with shaped_uplink(config) as shaped:
            node = build_device(shaped, model=model)
            # An edge device works without its broker: it classifies locally from the first
            # request on and offloads once paho's reconnect gets in.
            node.start(wait_s=START_WAIT_S, offline_ok=True)
            try:
                records = node.run(
                    source,
                    requests=config.requests,
                    rate_hz=config.rate_hz,
                    on_record=printer,
                    should_stop=stop.is_set,
                )
            finally:
                node.stop()
    finally:
        printer.close()
        source.close()
    offloaded = sum(r.offloaded for r in records)
    print(
        f"{config.device_id}: {len(records)} requests, {offloaded} offloaded, "
        f"{len(records) - offloaded} local"
    )
    return 0


class _RecordPrinter:
    def __init__(self, out: TextIO, jsonl: Path | None, *, quiet: int) -> None:
        self.out = out
        self.quiet = quiet
        self.jsonl = jsonl.open("a") if jsonl else None
        self.rows = 0

    def __call__(self, record: ResultRecord) -> None:
        from device_node import table

        if not self.quiet:
            if self.rows % 40 == 0:
                print(table.header(), file=self.out)
            print(table.row(record), file=self.out, flush=True)
        self.rows += 1
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record.to_dict()) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device-node", description="Run a splitmq device node against an MQTT broker."
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded("device-node", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
