"""The onnxruntime backend: an exported build of the real lite0 weights, cut into blocks, gives
the unsplit PyTorch model's answers at every split, and refuses any build but its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from splitting.errors import MissingExtraError
from splitting.images import sample_images
from splitting.onnx_blocks import MANIFEST, BuildMismatchError, OnnxBlocks, read_manifest
from splitting.onnx_export import ensure_exported
from splitting.partition import SplitModel
from splitting.registry import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    return load_model()


@pytest.fixture(scope="module")
def blocks(lite0_export: Path, lite0: SplitModel) -> OnnxBlocks:
    return OnnxBlocks(lite0_export, expected_fingerprint=lite0.fingerprint)


def test_the_build_describes_the_model_it_came_from(blocks: OnnxBlocks, lite0: SplitModel) -> None:
    assert (blocks.name, blocks.n, blocks.fingerprint) == (lite0.name, lite0.n, lite0.fingerprint)
    assert blocks.labels == lite0.labels
    assert [tuple(s) for s in blocks.manifest.split_shapes] == list(lite0.split_shapes())


def test_numpy_preprocessing_gives_the_torch_pixels_bit_for_bit(
    blocks: OnnxBlocks, lite0: SplitModel
) -> None:
    for _, image in sample_images():
        prepared = lite0.prepare_image(image)
        assert np.array_equal(blocks.preprocess(prepared), lite0.preprocess(prepared).numpy())


def test_every_split_through_onnxruntime_agrees_with_the_unsplit_model(
    blocks: OnnxBlocks, lite0: SplitModel
) -> None:
    worst = 0.0
    for _, image in sample_images():
        prepared = lite0.prepare_image(image)
        reference = lite0.forward(lite0.preprocess(prepared)).numpy()
        x = blocks.preprocess(prepared)
        for k in range(lite0.n + 1):
            logits = blocks.tail(blocks.head(x, k), k)
            assert logits.argmax() == reference.argmax(), f"split {k}"
            worst = max(worst, float(np.abs(logits - reference).max()))
    assert worst < 1e-4  # float32 rounding of another runtime, not another answer


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 rounding: within 1e-5 of the larger tensor's largest magnitude."""
    return a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-5 * float(np.abs(b).max())


def test_heads_and_tails_meet_the_pytorch_halves_at_each_boundary(
    blocks: OnnxBlocks, lite0: SplitModel
) -> None:
    x = lite0.preprocess(lite0.prepare_image(sample_images()[0][1]))
    torch_logits = lite0.forward(x).numpy()
    for k in (1, 6, 13):
        torch_head = lite0.head(x, k).numpy()
        assert close(blocks.head(x.numpy(), k), torch_head)
        assert close(blocks.tail(torch_head, k), torch_logits)


def test_a_batch_runs_as_its_rows_would_alone(blocks: OnnxBlocks, lite0: SplitModel) -> None:
    prepared = np.stack([lite0.prepare_image(image) for _, image in sample_images()[:4]])
    z = blocks.head(blocks.preprocess(prepared), 9)
    batched = blocks.tail(z, 9)
    alone = np.concatenate([blocks.tail(z[i : i + 1], 9) for i in range(4)])
    assert close(batched, alone)


def test_a_build_of_other_weights_is_refused(lite0_export: Path) -> None:
    with pytest.raises(BuildMismatchError, match="export this build again"):
        OnnxBlocks(lite0_export, expected_fingerprint="0123456789abcdef")


def test_a_changed_block_file_is_refused(changed_build: Path) -> None:
    with pytest.raises(BuildMismatchError, match="block_03"):
        OnnxBlocks(changed_build)


def test_a_block_from_another_build_is_refused_even_with_a_matching_hash(
    lite0_export: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(lite0_export, tmp_path / "build"))
    manifest = read_manifest(copy)
    forged = manifest.model_copy(update={"fingerprint": "fedcba9876543210"})
    (copy / MANIFEST).write_text(forged.model_dump_json())
    with pytest.raises(BuildMismatchError, match="fedcba9876543210"):
        OnnxBlocks(copy)


def test_a_second_export_of_the_same_weights_is_the_first(
    lite0_export: Path, lite0: SplitModel
) -> None:
    stamp = (lite0_export / MANIFEST).stat().st_mtime_ns
    assert ensure_exported(lite0, lite0_export.parent) == lite0_export
    assert (lite0_export / MANIFEST).stat().st_mtime_ns == stamp


def test_a_broken_manifest_is_not_taken_for_a_build(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(Exception, match="not a readable splitmq export"):
        OnnxBlocks(tmp_path)


def test_the_export_command_names_the_build_it_keeps(
    lite0_export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from splitmq.cli import main

    assert main(["export", "--out", str(lite0_export.parent)]) == 0
    printed = capsys.readouterr().out
    assert read_manifest(lite0_export).fingerprint in printed and str(lite0_export) in printed


def test_the_build_carries_its_own_profile_measured_against_pytorch(blocks: OnnxBlocks) -> None:
    profile = blocks.build_profile()
    assert profile is not None
    assert (profile.backend, profile.fingerprint) == ("onnxruntime", blocks.fingerprint)
    # Lossless frames through the exported build give the PyTorch model's top-1 at every split.
    assert all(s.agreement["lossless"] == 1.0 for s in profile.splits[1 : blocks.n])
    assert profile.splits[0].agreement["webp"] == 1.0


def _has_cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_has_cuda_provider(), reason="this onnxruntime has its CUDA provider")
def test_a_gpu_without_onnxruntimes_cuda_provider_is_refused_by_name(lite0_export: Path) -> None:
    with pytest.raises(MissingExtraError, match="onnxruntime-gpu"):
        OnnxBlocks(lite0_export, device="cuda")


@pytest.mark.skipif(not _has_cuda_provider(), reason="needs onnxruntime-gpu and a GPU")
def test_every_split_on_onnxruntimes_gpu_agrees_with_the_unsplit_model(
    lite0_export: Path, lite0: SplitModel
) -> None:
    gpu = OnnxBlocks(lite0_export, expected_fingerprint=lite0.fingerprint, device="cuda:0")
    assert gpu.providers[0][0] == "CUDAExecutionProvider"
    for _, image in sample_images():
        prepared = lite0.prepare_image(image)
        reference = lite0.forward(lite0.preprocess(prepared)).numpy()
        x = gpu.preprocess(prepared)
        for k in range(lite0.n + 1):
            assert gpu.tail(gpu.head(x, k), k).argmax() == reference.argmax(), f"split {k}"
