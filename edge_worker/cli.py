"""`edge-worker` (and `splitmq worker`): run one edge worker until Ctrl-C or SIGTERM.

splitmq config example worker > worker.yaml && edge-worker --config worker.yaml
edge-worker --host 127.0.0.1 --port 18830 --model efficientnet-lite0
edge-worker --host 127.0.0.1 --model path/to/net.py:build     # your own model (README)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from edge_worker.config import WorkerConfig, load_worker_config, with_overrides
from mqtt_session.options import add_connection_arguments, with_connection_flags
from splitmq_base.cli import (
    add_verbosity,
    configure_logging,
    guarded,
    port_number,
    stop_on_signals,
)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's options; flags override the values of --config."""
    parser.add_argument(
        "--config",
        help="worker YAML file (an example with every key: splitmq config example worker)",
    )
    add_connection_arguments(parser)
    # The old spellings, kept working but out of --help.
    parser.add_argument("--broker-host", dest="host", help=argparse.SUPPRESS)
    parser.add_argument("--broker-port", dest="port", type=port_number, help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help="unique worker name (telemetry and status topics)")
    parser.add_argument("--topic-prefix", help="first level(s) of every topic")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="model to serve at all its splits: a registered name or a model file, net.py:factory"
        " or TorchScript (repeatable; replaces the config's models)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where tails run")
    parser.add_argument(
        "--max-batch", type=int, help="most requests per tail call (1 = bit-exact logits)"
    )
    parser.add_argument("--max-wait-ms", type=float, help="batch gathering window")
    parser.add_argument("--queue-capacity", type=int, help="queue size = MQTT ReceiveMaximum")
    parser.add_argument(
        "--max-held-bytes", type=int, help='request bytes held at most; past it: "rejected"'
    )
    parser.add_argument(
        "--runner",
        choices=("model", "echo"),
        help='"echo" skips the model (transport benchmark)',
    )
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads")
    add_verbosity(parser)


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The config file (or defaults) with the command-line flags applied."""
    base = load_worker_config(args.config) if args.config else WorkerConfig()
    overrides: dict[str, Any] = {
        "broker": with_connection_flags(base.broker, args),
        "worker_id": args.worker_id,
        "topic_prefix": args.topic_prefix,
        "models": [{"name": name} for name in args.model] if args.model else None,
        "device": args.device,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "queue_capacity": args.queue_capacity,
        "max_held_bytes": args.max_held_bytes,
        "runner": args.runner,
        "torch_threads": args.torch_threads,
    }
    return with_overrides(base, overrides)


def run(args: argparse.Namespace) -> int:
    """Run a worker in the foreground until a signal; 0 on a clean stop. A splitmq error
    propagates to the caller's `guarded`."""
    from edge_worker.worker import EdgeWorker  # here, so that `--help` answers without torch

    configure_logging(args)
    config = config_from_args(args)
    worker = EdgeWorker(config)
    stop = stop_on_signals()
    worker.start(wait_s=None)
    where = config.broker.url  # mqtts:// for TLS
    print(
        f"worker {config.worker_id}: {served_summary(worker.runner.served())} on"
        f" {worker.runner.device}; connecting to {where} (Ctrl-C stops it)",
        flush=True,
    )
    announced = False
    while not stop.wait(0.5):
        if not announced and worker.link.session.connected:
            announced = True  # once: a reconnect is the session's news, not a new start
            print(f"worker {config.worker_id} serving on {where}", flush=True)
    worker.stop()
    print(f"worker {config.worker_id} stopped", flush=True)
    return 0


def served_summary(served: dict[str, list[int]]) -> str:
    """`{"lite0": [0, 1, 2, 5]}` -> "lite0 at splits 0-2, 5" (one model per clause)."""
    return "; ".join(f"{name} at splits {split_ranges(splits)}" for name, splits in served.items())


def split_ranges(splits: Sequence[int]) -> str:
    runs: list[list[int]] = []
    for k in sorted(splits):
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-worker", description="Run a splitmq edge worker.")
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    return guarded("edge-worker", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
