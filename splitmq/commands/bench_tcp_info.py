"""`splitmq bench tcp-info`: TCP_INFO on a real socket against a kernel-shaped uplink."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.reports import add_json_option, prints_json, write_report


def register(subparsers: Any) -> None:
    from splitmq.bench.tcp_info import __doc__ as doc

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tcp-info",
        help="what TCP_INFO says of a tc-shaped link, against ack-timed samples (root)",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.tcp_info import TcpInfoOptions, format_report, run_tcp_info_bench

    result = run_tcp_info_bench(TcpInfoOptions())
    if not prints_json(args.json_path):
        print(format_report(result))
    write_report(result, args.json_path)
    return 0
