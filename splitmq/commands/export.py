"""`splitmq export --model NAME`: write the model's onnxruntime build (one graph per block).

The build goes to `--out DIR/<model>-<fingerprint>/` (default: the cache the onnxruntime
backend reads, $SPLITMQ_CACHE_DIR/onnx or ~/.cache/splitmq/onnx). A build of the same weights
already there is kept; `--force` exports again. Copy the directory to a fleet's devices and
point their `export_dir` at its parent: the fingerprint in its name and manifest ties it to
these weights, and a worker refuses frames of any other build.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from splitting.registry import DEFAULT_MODEL


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write a model's onnxruntime build, one graph per block",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    parser.add_argument("--weights", default=None, help="the model's weights (name or file)")
    parser.add_argument("--out", type=Path, default=None, help="parent of the build directory")
    parser.add_argument("--force", action="store_true", help="export even if the build exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitting.onnx_blocks import read_manifest
    from splitting.onnx_export import build_dir, ensure_exported, export_model
    from splitting.registry import load_model

    model = load_model(args.model, weights=args.weights)
    if args.force:
        directory = export_model(model, build_dir(model, args.out))
    else:
        directory = ensure_exported(model, args.out)
    manifest = read_manifest(directory)
    size = sum(path.stat().st_size for path in directory.iterdir())
    print(
        f"{manifest.model} build {manifest.fingerprint}: {manifest.n} blocks, "
        f"{size / 1e6:.1f} MB in {directory}"
    )
    return 0
