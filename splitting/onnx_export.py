"""Export a split model once to ONNX and cut it into one graph per block (`splitmq export`).

The whole model is exported in one piece by torch's dynamo exporter (the TorchScript exporter
fails on efficientnet-lite0), with every block boundary as a named output `split_k`; then the
graph is cut at those boundaries, so the blocks are the pieces of one graph, not n separate
exports. Builds are kept per model fingerprint: a second request for the same weights is a
directory lookup, and a build of other weights can never be taken for this one.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from splitting.errors import MissingExtraError, ProfileError
from splitting.onnx_blocks import (
    BLOCK_KEY,
    FINGERPRINT_KEY,
    FORMAT_VERSION,
    MANIFEST,
    PROFILE,
    BlockFile,
    ExportManifest,
    OnnxBlocks,
    build_dir_name,
    default_export_dir,
    read_manifest,
    sha256_of,
)
from splitting.partition import SplitModel

OPSET = 18
MAX_EXPORT_BATCH = 1024


def build_dir(model: SplitModel, export_dir: str | Path | None = None) -> Path:
    root = Path(export_dir) if export_dir is not None else default_export_dir()
    return root / build_dir_name(model.name, model.fingerprint)


def ensure_exported(model: SplitModel, export_dir: str | Path | None = None) -> Path:
    """The directory of this model build's export, exported now if it is missing or broken."""
    target = build_dir(model, export_dir)
    with contextlib.suppress(ProfileError):
        manifest = read_manifest(target)
        if manifest.fingerprint == model.fingerprint and manifest.profile is not None:
            return target
    return export_model(model, target)


class _AllBoundaries(nn.Module):
    """The blocks in order, returning every block's output: split_1 .. split_n."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return tuple(outputs)


def export_model(model: SplitModel, target: Path) -> Path:
    """Export `model` into `target` (replaced whole, never left half-written)."""
    _require_exporter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        whole = _export_whole(model, staging / "whole.onnx")
        blocks = _cut_blocks(whole, model, staging)
        (staging / "whole.onnx").unlink()
        manifest = _write_manifest(model, blocks, staging)
        _write_profile(model, manifest, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _export_whole(model: SplitModel, path: Path) -> Path:
    size = model.input_size
    sample = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    names = [f"split_{k}" for k in range(1, model.n + 1)]
    # The exporter reports its progress on stdout and warns about its own internals.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _AllBoundaries(model.blocks).eval(),
            (sample,),
            dynamo=True,
            opset_version=OPSET,
            input_names=["split_0"],
            output_names=names,
            dynamic_shapes=({0: batch},),
        )
    if program is None:
        raise ProfileError(f"the exporter returned no program for {model.name}")
    program.save(str(path))
    return path


def _cut_blocks(whole: Path, model: SplitModel, staging: Path) -> list[BlockFile]:
    import onnx
    from onnx.utils import Extractor

    graph = onnx.load(str(whole))
    extractor = Extractor(graph)
    files = []
    for index in range(model.n):
        block = extractor.extract_model([f"split_{index}"], [f"split_{index + 1}"])
        for key, value in ((FINGERPRINT_KEY, model.fingerprint), (BLOCK_KEY, str(index))):
            entry = block.metadata_props.add()
            entry.key, entry.value = key, value
        name = f"block_{index:02d}.onnx"
        onnx.save(block, str(staging / name))
        files.append(BlockFile(name=name, sha256=sha256_of(staging / name)))
    return files


def _write_profile(model: SplitModel, manifest: ExportManifest, staging: Path) -> None:
    """Profile the build itself (bytes, codec times, agreement with the unsplit PyTorch model
    on the sample images), so a device without torch or sample images has them."""
    from splitting.profiling import profile_model

    profile_model(OnnxBlocks(staging, threads=1), reference=model).save(staging / PROFILE)
    entry = BlockFile(name=PROFILE, sha256=sha256_of(staging / PROFILE))
    _save_manifest(manifest.model_copy(update={"profile": entry}), staging)


def _save_manifest(manifest: ExportManifest, staging: Path) -> None:
    (staging / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=1) + "\n")


def _write_manifest(model: SplitModel, blocks: list[BlockFile], staging: Path) -> ExportManifest:
    import onnx

    manifest = ExportManifest(
        format=FORMAT_VERSION,
        model=model.name,
        fingerprint=model.fingerprint,
        block_names=tuple(model.block_names),
        input_size=model.input_size,
        mean=model.mean,
        std=model.std,
        split_shapes=[list(shape) for shape in model.split_shapes()],
        labels=tuple(model.labels),
        blocks=tuple(blocks),
        exporter={"torch": torch.__version__, "onnx": onnx.__version__, "opset": str(OPSET)},
    )
    _save_manifest(manifest, staging)
    return manifest


def _require_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise MissingExtraError(
            "exporting to ONNX needs onnx and onnxscript: pip install 'splitmq[onnx]'"
        ) from exc
