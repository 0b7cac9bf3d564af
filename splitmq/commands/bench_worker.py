"""`splitmq bench worker --json PATH`: batched against unbatched tails, in process and
through a real worker and broker, and what batching changes in the answer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report


def register(subparsers: Any) -> None:
    from splitmq.bench.worker import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="batched vs unbatched tails of a real model (in process and through MQTT)",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--split", type=int, action="append", help="split k (repeatable)")
    parser.add_argument("--codec", default="int5", help="frame codec of the requests")
    parser.add_argument("--max-batch", type=int, default=8, help="the batched setting")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="batched worker's window")
    parser.add_argument("--requests", type=int, default=240, help="per split and setting")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument(
        "--backend", choices=("torch", "onnxruntime"), default="torch", help="the batched tails'"
    )
    parser.add_argument("--export-dir", type=Path, default=None, help="where builds are kept")
    parser.add_argument("--no-mqtt", action="store_true", help="only the in-process part")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.worker import WorkerBenchOptions, format_report, run_worker_bench

    options = WorkerBenchOptions(
        model=args.model,
        splits=tuple(args.split or ()),
        codec=args.codec,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        requests=args.requests,
        mqtt_requests=args.requests,
        mqtt=not args.no_mqtt,
        torch_threads=args.torch_threads,
        backend=args.backend,
        export_dir=args.export_dir,
    )
    result = run_worker_bench(options)
    if not prints_json(args.json_path):
        print(format_report(result))
    write_report(result, args.json_path)
    return 0
