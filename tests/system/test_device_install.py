"""A device node installed the way a fleet installs it: `pip install --no-compile
'splitmq[device]'` into a fresh venv, with no torch. It runs an exported build against a real
Mosquitto and a real PyTorch worker, offloads, runs locally, and gives the unsplit model's
answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.registry import load_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0"
SPLIT = 13
INSTALL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("device-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-compile", f"{ROOT}[device]"],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    return venv


def venv_python(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False
    )


def test_the_device_extra_installs_no_torch(device_venv: Path) -> None:
    assert venv_python(device_venv, "import torch").returncode != 0
    done = venv_python(device_venv, "import device_node.runtime, onnxruntime, sys; print('ok')")
    assert done.stdout.strip() == "ok", done.stderr


def photos_folder(folder: Path, count: int) -> list[np.ndarray]:
    folder.mkdir()
    images = [image for _, image in sample_images()[:count]]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:02d}.png")  # lossless: the same pixels back
    return images


def device_yaml(path: Path, broker: BrokerSettings, export: Path, split: int) -> Path:
    config = {
        "broker": {"host": broker.host, "port": broker.port},
        "device_id": f"pip-device-{split}",
        "model": MODEL,
        "backend": "onnxruntime",
        "export_dir": str(export.parent),
        "policy": {"kind": "fixed", "split": split},
        "deadline_ms": 10000,
        "torch_threads": 1,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_torch_free_device_offloads_and_runs_locally_with_the_models_answers(
    device_venv: Path, broker_settings: BrokerSettings, lite0_export: Path, tmp_path: Path
) -> None:
    lite0: SplitModel = load_model(MODEL)
    images = photos_folder(tmp_path / "photos", 3)
    expected = [
        int(lite0.forward(lite0.preprocess(lite0.prepare_image(image))).argmax())
        for image in images
    ]
    worker = WorkerConfig(
        broker=broker_settings, worker_id="torch-w", models=[ModelEntry(name=MODEL)], device="cpu"
    )
    with EdgeWorker(worker, ModelTailRunner({MODEL: lite0}, {MODEL: [SPLIT]})):
        for split in (SPLIT, lite0.n):
            jsonl = tmp_path / f"records-{split}.jsonl"
            config = device_yaml(
                tmp_path / f"device-{split}.yaml", broker_settings, lite0_export, split
            )
            argv = ["--config", str(config), "--folder", str(tmp_path / "photos"), "--quiet"]
            done = subprocess.run(
                [
                    str(device_venv / "bin" / "device-node"),
                    *argv,
                    "--requests",
                    "3",
                    "--jsonl",
                    str(jsonl),
                ],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            records = [json.loads(line) for line in jsonl.read_text().splitlines()]
            assert [r["offloaded"] for r in records] == [split == SPLIT] * 3
            assert [r["top1"]["index"] for r in records] == expected
