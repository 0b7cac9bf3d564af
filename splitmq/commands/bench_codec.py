"""`splitmq bench codec --json PATH`: every codec at every candidate split, on real inputs."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from splitmq.bench.codec import DEFAULT_BATCH, DEFAULT_INPUTS, bench_codecs, format_table
from splitmq.bench.codec import __doc__ as codec_doc
from splitmq_base.cli import jpeg_quality, positive_int, progress_bar
from splitting.images import augmented_images
from splitting.profiling import DEFAULT_CODECS, DEFAULT_JPEG_QUALITY, torch_threads
from splitting.registry import DEFAULT_MODEL, load_model


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "codec",
        help="bytes, codec time and top-1 agreement of each codec at each candidate split",
        description=codec_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", required=True, metavar="PATH", help="where to write results")
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
    started = time.perf_counter()
    with torch_threads(args.threads or torch.get_num_threads()):
        model = load_model(args.model, weights=args.weights)
        batches = math.ceil(args.inputs / args.batch)
        quiet = getattr(args, "quiet", False)
        with progress_bar(f"codecs on {model.name}", batches, quiet=quiet) as advance:
            result = bench_codecs(
                model,
                augmented_images(args.inputs, model.input_size, args.seed),
                codecs=args.codecs,
                jpeg_quality=args.jpeg_quality,
                batch=args.batch,
                on_batch=advance,
            )
    result["seed"] = args.seed
    result["wall_s"] = round(time.perf_counter() - started, 1)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(format_table(result))
    print(f"\nwrote {path}")
    return 0
