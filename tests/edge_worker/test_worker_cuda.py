"""The tail runner on CUDA answers like the CPU one (runs only where torch sees a GPU)."""

from __future__ import annotations

import pytest
import torch

from edge_worker.runner import ModelTailRunner, resolve_device
from schemas.frame import encode_frame
from splitting.images import sample_images
from splitting.registry import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


def test_cuda_runner_gives_the_cpu_runners_top5_on_real_images() -> None:
    assert resolve_device("auto") == "cuda"
    cpu_model, gpu_model = load_model("efficientnet-lite0"), load_model("efficientnet-lite0")
    split = 5
    on_cpu = ModelTailRunner({cpu_model.name: cpu_model}, {cpu_model.name: [split]})
    on_gpu = ModelTailRunner({gpu_model.name: gpu_model}, {gpu_model.name: [split]}, device="cuda")
    assert on_gpu.device.startswith("cuda")
    frames = []
    for i, (_, image) in enumerate(sample_images()[:4]):
        head = cpu_model.head(cpu_model.preprocess(cpu_model.prepare_image(image)), split)[0]
        payload = encode_frame(
            head.numpy(),
            codec="lossless",
            request_id=f"r{i}",
            model=cpu_model.name,
            fingerprint=cpu_model.fingerprint,
            split=split,
        )
        frames.append(on_cpu.decode(payload, cpu_model.name, split))
    cpu_top = on_cpu.run_batch(cpu_model.name, split, frames)
    gpu_top = on_gpu.run_batch(gpu_model.name, split, frames)
    assert [top[0].index for top in gpu_top] == [top[0].index for top in cpu_top]
    for cpu_preds, gpu_preds in zip(cpu_top, gpu_top, strict=True):
        assert gpu_preds[0].score == pytest.approx(cpu_preds[0].score, abs=1e-3)
