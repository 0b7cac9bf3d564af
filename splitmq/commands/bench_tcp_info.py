"""`splitmq bench tcp-info`: TCP_INFO on a real socket against a kernel-shaped uplink."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from splitmq.reports import write_report


def register(subparsers: Any) -> None:
    from splitmq.bench.tcp_info import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tcp-info",
        help="what TCP_INFO says of a tc-shaped link, against ack-timed samples (root)",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="write the results here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.tcp_info import TcpInfoOptions, format_report, run_tcp_info_bench

    result = run_tcp_info_bench(TcpInfoOptions())
    print(format_report(result))
    write_report(result, args.json_path)
    return 0
