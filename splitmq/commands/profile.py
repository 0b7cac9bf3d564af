"""`splitmq profile --model NAME`: bytes and device time of every split of a model.

Prints a table of every split k (block, output shape, frame bytes per codec, device ms, and
whether k is a candidate under the decision codec), or with `--json` exactly one JSON object:
`model`, `input_bytes`, `candidates`, `splits` (each with `k`, `name`, `shape`, `bytes`,
`device_ms`, `candidate`) and the rest of the profile.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitmq.reports import add_json_option, prints_json
from splitmq.text_table import aligned_rows
from splitmq_base.cli import jpeg_quality, positive_int, progress_bar
from splitting.blocks import Blocks
from splitting.images import augmented_images
from splitting.model_files import build_dir
from splitting.onnx_blocks import OnnxBlocks
from splitting.profiles import (
    DEFAULT_CODECS,
    DEFAULT_DECISION_CODEC,
    DEFAULT_JPEG_QUALITY,
    ModelProfile,
)
from splitting.profiling import DEFAULT_PROFILE_IMAGES, DEFAULT_REPEATS, profile_model
from splitting.registry import DEFAULT_MODEL, load_model

if TYPE_CHECKING:
    from splitting.partition import SplitModel


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "profile",
        help="bytes on the wire and device time of every split of a model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a registered name (default {DEFAULT_MODEL}), path/to/net.py:factory, a TorchScript"
        " file or an exported build directory (README: Your own model)",
    )
    parser.add_argument(
        "--codec",
        default=DEFAULT_DECISION_CODEC,
        choices=DEFAULT_CODECS,
        help="the codec whose bytes decide the candidate splits (default %(default)s)",
    )
    add_json_option(parser, what="profile")
    parser.add_argument(
        "--images",
        type=positive_int,
        default=DEFAULT_PROFILE_IMAGES,
        help="augmented sample images the bytes are the median over (default %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads for the device-side timings (default %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=DEFAULT_REPEATS, help="timing runs per block"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="'random', a local state_dict file, or cached named weights (default: the model's)",
    )
    parser.add_argument(
        "--jpeg-quality", type=jpeg_quality, default=DEFAULT_JPEG_QUALITY, help="JPEG at split 0"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the image augmentation")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="measure the PyTorch model, or its exported build (agreement against PyTorch)",
    )
    parser.add_argument("--export-dir", type=Path, default=None, help="where builds are kept")
    parser.add_argument("--save", metavar="PATH", help="also write the full profile as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = _measure(args)
    if args.save:
        profile.save(args.save)
    if prints_json(args.json_path):
        print(json.dumps(profile.to_dict(), allow_nan=False))
        return 0
    print(format_profile(profile))
    if args.json_path is not None:
        profile.save(args.json_path)
        print(f"  written to {args.json_path}")
    return 0


def _measure(args: argparse.Namespace) -> ModelProfile:
    model = _model(args)
    measured, reference = _on_backend(args, model)
    images = augmented_images(args.images, model.input_size, seed=args.seed)
    quiet = getattr(args, "quiet", False)
    with progress_bar(f"profiling {model.name}", model.n + 1, quiet=quiet) as advance:
        return profile_model(
            measured,
            images,
            reference=reference,
            codec=args.codec,
            jpeg_quality=args.jpeg_quality,
            threads=args.threads,
            repeats=args.repeats,
            on_split=advance,
        )


def _on_backend(
    args: argparse.Namespace, model: SplitModel | OnnxBlocks
) -> tuple[SplitModel | Blocks, SplitModel | None]:
    """What is measured, and the PyTorch model its answers are compared with (None: itself)."""
    if isinstance(model, OnnxBlocks) or args.backend == "torch":
        return model, None
    from splitting.onnx_export import ensure_exported

    export = ensure_exported(model, args.export_dir)
    blocks = OnnxBlocks(export, expected_fingerprint=model.fingerprint, threads=args.threads)
    return blocks, model


def _model(args: argparse.Namespace) -> SplitModel | OnnxBlocks:
    exported = build_dir(args.model)
    if exported is None:
        return load_model(args.model, weights=args.weights)
    return OnnxBlocks(exported, threads=args.threads)


def format_profile(profile: ModelProfile) -> str:
    """A readable table: one row per split, bytes per codec, `*` on candidates."""
    codecs = list(profile.codecs)
    header = ["k", "block", "shape", *[f"{c} B" for c in codecs], "device ms", "cand"]
    rows = [header]
    for point in profile.splits:
        shape = "x".join(str(d) for d in point.shape) or "-"
        sizes = [f"{profile.bytes_at(point.k, c) if point.k < profile.n else 0:,}" for c in codecs]
        mark = "*" if point.candidate else ""
        rows.append([str(point.k), point.name, shape, *sizes, f"{point.device_ms:.2f}", mark])
    lines = [
        f"{profile.model}  fingerprint {profile.fingerprint}  host {profile.host}"
        f"  threads {profile.threads}  {profile.backend} {profile.backend_version}",
        f"split 0 sends the input as {profile.input_codec}: {profile.input_bytes:,} B"
        + "".join(
            f", as {codec} {size:,} B"
            for codec, size in profile.splits[0].bytes.items()
            if codec != profile.input_codec
        )
        + f"; split {profile.n} runs everything on the device",
        "",
        *aligned_rows(rows, left={1, 2}),
    ]
    candidates = profile.candidates()
    inner = [k for k in candidates if 0 < k < profile.n]
    lines += [
        "",
        f"candidates under {profile.codec} (bytes below every earlier split, plus 0 and"
        f" {profile.n}): {candidates}  ({len(inner)} besides 0 and n)",
        "candidates per codec: "
        + ", ".join(f"{codec} {profile.candidates(codec)}" for codec in codecs),
    ]
    return "\n".join(lines)
