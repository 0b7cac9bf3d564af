"""`splitmq bench codec --json PATH`: every codec at every candidate split, on real inputs."""

from __future__ import annotations

import argparse
from typing import Any

from splitmq.bench.codec import DEFAULT_BATCH, DEFAULT_INPUTS
from splitmq.bench.codec import __doc__ as codec_doc
from splitmq.reports import add_json_option, prints_json, write_report
from splitmq_base.cli import jpeg_quality, positive_int
from splitting.profiles import DEFAULT_CODECS, DEFAULT_JPEG_QUALITY
from splitting.registry import DEFAULT_MODEL


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "codec",
        help="bytes, codec time and top-1 agreement of each codec at each candidate split",
        description=codec_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_option(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    parser.add_argument("--weights", default=None, help="default: the model's own")
    parser.add_argument(
        "--inputs",
        type=positive_int,
        default=DEFAULT_INPUTS,
        help="images (the samples plus augmented crops) per measurement",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the image augmentation")
    parser.add_argument(
        "--codecs",
        nargs="+",
        default=list(DEFAULT_CODECS),
        metavar="CODEC",
        help="codecs to measure (default: all)",
    )
    parser.add_argument(
        "--jpeg-quality", type=jpeg_quality, default=DEFAULT_JPEG_QUALITY, help="JPEG at split 0"
    )
    parser.add_argument(
        "--batch", type=positive_int, default=DEFAULT_BATCH, help="images per model call"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch threads (default: torch's)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitmq.bench.codec import CodecOptions, format_table, run_codec_bench

    options = CodecOptions(
        model=args.model,
        weights=args.weights,
        inputs=args.inputs,
        seed=args.seed,
        codecs=tuple(args.codecs),
        jpeg_quality=args.jpeg_quality,
        batch=args.batch,
        threads=args.threads,
    )
    result = run_codec_bench(options, quiet=bool(getattr(args, "quiet", False)))
    if not prints_json(args.json_path):
        print(format_table(result))
    write_report(result, args.json_path)
    return 0
