"""`edge-worker` (and `splitmq worker`): run one edge worker until Ctrl-C or SIGTERM.

edge-worker --config configs/worker.example.yaml
edge-worker --broker-host 127.0.0.1 --broker-port 18830 --model efficientnet-lite0
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from broker.errors import BrokerError
from edge_worker.config import WorkerConfig, load_worker_config, with_overrides
from edge_worker.errors import WorkerError
from edge_worker.worker import EdgeWorker
from schemas.errors import SchemaError
from splitting.errors import SplittingError


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's options; flags override the values of --config."""
    parser.add_argument("--config", help="worker YAML file (see configs/worker.example.yaml)")
    parser.add_argument("--broker-host", help="MQTT broker host")
    parser.add_argument("--broker-port", type=int, help="MQTT broker port")
    parser.add_argument("--worker-id", help="unique worker name (telemetry and status topics)")
    parser.add_argument("--topic-prefix", help="first level(s) of every topic")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="model to serve at all its splits (repeatable; replaces the config's models)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where tails run")
    parser.add_argument(
        "--max-batch", type=int, help="most requests per tail call (1 = bit-exact logits)"
    )
    parser.add_argument("--max-wait-ms", type=float, help="batch gathering window")
    parser.add_argument("--queue-capacity", type=int, help="queue size = MQTT ReceiveMaximum")
    parser.add_argument(
        "--runner",
        choices=("model", "echo"),
        help='"echo" skips the model (transport benchmark)',
    )
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The config file (or defaults) with the command-line flags applied."""
    base = load_worker_config(args.config) if args.config else WorkerConfig()
    overrides: dict[str, Any] = {
        "broker": {"host": args.broker_host, "port": args.broker_port},
        "worker_id": args.worker_id,
        "topic_prefix": args.topic_prefix,
        "models": [{"name": name} for name in args.model] if args.model else None,
        "device": args.device,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "queue_capacity": args.queue_capacity,
        "runner": args.runner,
        "torch_threads": args.torch_threads,
    }
    return with_overrides(base, overrides)


def run(args: argparse.Namespace) -> int:
    """Run a worker in the foreground; 0 on a clean stop, 2 on a configuration error."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
        worker = EdgeWorker(config)
        worker.start(wait_s=None)
    except (WorkerError, BrokerError, SchemaError, SplittingError) as exc:
        print(f"edge-worker: {exc}", file=sys.stderr)
        return 2
    print(
        f"worker {config.worker_id} serving {worker.runner.served()} on {config.broker.url} "
        f"({worker.runner.device}); Ctrl-C stops it",
        flush=True,
    )
    _wait_for_signal()
    worker.stop()
    print(f"worker {config.worker_id} stopped", flush=True)
    return 0


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    while not stop.wait(0.5):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-worker", description="Run a splitmq edge worker.")
    add_worker_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
