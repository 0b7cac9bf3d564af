"""A newcomer's own model from a file: a Python factory and a TorchScript file run through
`splitmq profile`, a worker loaded from its config and a device process from its YAML, against a
real Mosquitto; a wrong block list is refused in one line naming the split that breaks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from splitting.images import sample_images
from splitting.registry import load_model

pytestmark = [pytest.mark.integration]

BIN = Path(sys.executable).parent
SPLIT = 2

NET = """
from torch import nn

from splitting.zoo import feature_blocks


class Net(nn.Module):
    input_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 4, 1), nn.ReLU()),  # a narrow bottleneck
            nn.Sequential(nn.Conv2d(4, 32, 3, stride=2, padding=1), nn.ReLU()),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def build():
    return Net(), feature_blocks


def broken():
    net = Net()
    # The pooling is left out: the classifier meets a feature map.
    return net, [*(("f%d" % i, m) for i, m in enumerate(net.features)), ("fc", net.classifier)]
"""


@pytest.fixture
def model_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tiny_net.py").write_text(textwrap.dedent(NET))
    torch.manual_seed(0)
    sequential = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 2, 1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(2, 5),
    ).eval()
    torch.jit.save(torch.jit.script(sequential), str(tmp_path / "scripted.pt"))
    return {
        "tiny_net": f"{tmp_path}/tiny_net.py:build",
        "scripted": f"{tmp_path}/scripted.pt",
        "broken": f"{tmp_path}/tiny_net.py:broken",
    }


def splitmq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "splitmq"), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("name", ["tiny_net", "scripted"])
def test_profile_takes_a_model_file(model_files: dict[str, str], name: str) -> None:
    done = splitmq("profile", "--model", model_files[name], "--images", "2", "--repeats", "1",
                   "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    profile = json.loads(done.stdout)
    assert profile["model"] == name
    assert profile["n"] == load_model(model_files[name]).n


def test_a_wrong_block_list_is_one_line_naming_the_split(model_files: dict[str, str]) -> None:
    done = splitmq("profile", "--model", model_files["broken"], "--images", "2")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "not exact at split 3" in lines[0]
    assert "'fc'" in lines[0]
    assert "Traceback" not in done.stderr


def device_yaml(path: Path, broker: BrokerSettings, ref: str) -> Path:
    config = {
        "broker": {"host": broker.host, "port": broker.port},
        "device_id": f"file-device-{path.stem}",
        "model": ref,
        "policy": {"kind": "fixed", "split": SPLIT},
        "deadline_ms": 10000,
        "torch_threads": 1,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name", ["tiny_net", "scripted"])
def test_a_worker_and_a_device_serve_a_model_file(
    model_files: dict[str, str], broker_settings: BrokerSettings, tmp_path: Path, name: str
) -> None:
    ref = model_files[name]
    model = load_model(ref)
    photos = tmp_path / "photos"
    photos.mkdir()
    images = [image for _, image in sample_images()[:2]]
    for i, image in enumerate(images):
        Image.fromarray(image).save(photos / f"{i}.png")
    expected = [
        int(model.forward(model.preprocess(model.prepare_image(im))).argmax()) for im in images
    ]
    worker = WorkerConfig(
        broker=broker_settings, worker_id="file-w", models=[ModelEntry(name=ref)], device="cpu"
    )
    jsonl = tmp_path / "records.jsonl"
    config = device_yaml(tmp_path / f"{name}.yaml", broker_settings, ref)
    with EdgeWorker(worker, ModelTailRunner.from_config(worker)):
        done = subprocess.run(
            [str(BIN / "device-node"), "--config", str(config), "--folder", str(photos),
             "--quiet", "--requests", "2", "--jsonl", str(jsonl)],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["split"] for r in records] == [SPLIT] * 2
    assert [r["offloaded"] for r in records] == [True] * 2
    assert [r["top1"]["index"] for r in records] == expected


def test_a_device_runs_an_exported_build_directory_of_a_model_file(
    model_files: dict[str, str], broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    ref = model_files["tiny_net"]
    exported = splitmq("export", "--model", ref, "--out", str(tmp_path / "builds"))
    assert exported.returncode == 0, exported.stderr
    (build,) = (tmp_path / "builds").iterdir()
    profiled = splitmq("profile", "--model", str(build), "--images", "2", "--repeats", "1",
                       "--json")  # fmt: skip
    assert profiled.returncode == 0, profiled.stderr
    assert json.loads(profiled.stdout)["model"] == "tiny_net"
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(sample_images()[0][1]).save(photos / "0.png")
    worker = WorkerConfig(
        broker=broker_settings, worker_id="file-w", models=[ModelEntry(name=ref)], device="cpu"
    )
    jsonl = tmp_path / "records.jsonl"
    config = device_yaml(tmp_path / "onnx.yaml", broker_settings, str(build))
    with EdgeWorker(worker, ModelTailRunner.from_config(worker)):
        done = subprocess.run(
            [str(BIN / "device-node"), "--config", str(config), "--folder", str(photos),
             "--quiet", "--requests", "1", "--jsonl", str(jsonl)],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert record["offloaded"] and record["split"] == SPLIT


def test_two_model_files_with_one_stem_are_refused_in_a_worker_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model listed twice: net"):
        WorkerConfig(models=[ModelEntry(name=f"{tmp_path}/a/net.py:build"),
                             ModelEntry(name=f"{tmp_path}/b/net.pt")])  # fmt: skip
