"""Registering a user's own model and block list (the worked example of docs/models.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from splitting.errors import ModelRegistrationError
from splitting.images import augmented_images
from splitting.registry import (
    PLUGIN_GROUP,
    BlockList,
    ModelSpec,
    available_models,
    load_model,
    load_model_plugins,
    register_model,
    unregister_model,
)

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[2]
FRUITS = ["apple", "banana", "cherry", "date"]


class TinyNet(nn.Module):
    """A small classifier with a narrow 1x1 bottleneck in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16))
        self.act = nn.ReLU()
        self.stage1 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.squeeze = nn.Sequential(nn.Conv2d(32, 4, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, len(FRUITS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(self.stage1(self.act(self.stem(x))))
        out: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return out


def tiny_blocks(model: nn.Module) -> BlockList:
    net: TinyNet = model  # type: ignore[assignment]
    return [
        ("stem", nn.Sequential(net.stem, net.act)),
        ("stage1", net.stage1),
        ("squeeze", net.squeeze),
        ("classifier", nn.Sequential(net.pool, nn.Flatten(1), net.fc)),
    ]


def tiny_blocks_missing_relu(model: nn.Module) -> BlockList:
    net: TinyNet = model  # type: ignore[assignment]
    return [("stem", net.stem), *tiny_blocks(model)[1:]]


@pytest.fixture
def tinynet() -> Iterator[str]:
    register_model(
        ModelSpec(name="tinynet", build=TinyNet, blocks=tiny_blocks, input_size=64, labels=FRUITS)
    )
    yield "tinynet"
    unregister_model("tinynet")


def test_a_registered_model_splits_exactly_at_every_block(tinynet: str) -> None:
    assert tinynet in available_models()
    model = load_model(tinynet)
    assert model.n == 4
    assert model.block_names == ["stem", "stage1", "squeeze", "classifier"]
    assert model.labels == FRUITS
    assert model.split_shapes() == ((64, 64, 3), (16, 32, 32), (32, 16, 16), (4, 16, 16), ())
    x = model.preprocess(augmented_images(3, 64, seed=1))
    reference = model.forward(x)
    assert reference.shape == (3, 4)
    for k in range(model.n + 1):
        assert torch.equal(model.tail(model.head(x, k), k), reference)
    assert model.inexact_splits(x) == []


def test_a_block_list_that_drops_an_operation_is_caught() -> None:
    register_model(
        ModelSpec(name="tinynet-bad", build=TinyNet, blocks=tiny_blocks_missing_relu, input_size=64)
    )
    try:
        model = load_model("tinynet-bad")
        x = model.preprocess(augmented_images(2, 64, seed=2))
        assert model.inexact_splits(x) == list(range(model.n + 1))
    finally:
        unregister_model("tinynet-bad")


def test_registration_errors_are_specific(tinynet: str) -> None:
    spec = ModelSpec(name=tinynet, build=TinyNet, blocks=tiny_blocks, input_size=64)
    with pytest.raises(ModelRegistrationError, match="already registered"):
        register_model(spec)
    register_model(spec, replace=True)  # an explicit redefinition is fine
    for bad_name in ["", "a/b", "tiny net", "$share", "+", "x" * 65]:
        with pytest.raises(ModelRegistrationError, match="model name"):
            register_model(ModelSpec(name=bad_name, build=TinyNet, blocks=tiny_blocks))
    with pytest.raises(ModelRegistrationError, match="input_size"):
        register_model(ModelSpec(name="tiny2", build=TinyNet, blocks=tiny_blocks, input_size=0))


def _no_blocks(model: nn.Module) -> BlockList:
    return []


def _repeated_blocks(model: nn.Module) -> BlockList:
    return [tiny_blocks(model)[0]] * 2


def _function_block(model: nn.Module) -> BlockList:
    return [("stem", lambda x: x)]  # type: ignore[list-item]


def test_bad_block_lists_and_labels_fail_at_load() -> None:
    cases = {
        "tiny-empty": (_no_blocks, "empty"),
        "tiny-dupe": (_repeated_blocks, "repeat"),
        "tiny-notmodule": (_function_block, "not an nn.Module"),
    }
    for name, (blocks, message) in cases.items():
        register_model(ModelSpec(name=name, build=TinyNet, blocks=blocks, input_size=64))
        try:
            with pytest.raises(ModelRegistrationError, match=message):
                load_model(name)
        finally:
            unregister_model(name)
    register_model(
        ModelSpec(name="tiny-labels", build=TinyNet, blocks=tiny_blocks, labels=["only", "two"])
    )
    try:
        with pytest.raises(ModelRegistrationError, match="2 labels given for a model with 4"):
            load_model("tiny-labels")
    finally:
        unregister_model("tiny-labels")


PLUGIN_MODULE = """
import torch
from torch import nn

from splitting.registry import ModelSpec


def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 2, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(2, 3),
    )


def blocks(model):
    return [("conv1", model[:2]), ("squeeze", model[2:4]), ("classifier", model[4:])]


def specs():
    return [ModelSpec(name="plugin-net", build=build, blocks=blocks, input_size=32,
                      labels=["red", "green", "blue"])]
"""


def _install_fake_distribution(root: Path, group: str, target: str) -> None:
    """A package installed on sys.path: a module and a dist-info with an entry point."""
    (root / "plugin_models.py").write_text(PLUGIN_MODULE)
    info = root / "splitmq_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: splitmq-plugin-demo\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[{group}]\ndemo = {target}\n")


@pytest.mark.integration  # runs a fresh interpreter on the installed plugin
def test_installed_packages_register_models_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_distribution(tmp_path, PLUGIN_GROUP, "plugin_models:specs")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_model_plugins() == ["plugin-net"]
        model = load_model("plugin-net")
        assert model.block_names == ["conv1", "squeeze", "classifier"]
        assert model.labels == ["red", "green", "blue"]
        x = model.preprocess(augmented_images(2, 32, seed=0))
        assert model.inexact_splits(x) == []
    finally:
        unregister_model("plugin-net")
    # a fresh process (the CLI) finds the plugin by itself
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    command = ["profile", "--model", "plugin-net", "--json", "--images", "2", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "splitmq.cli", *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    profile = json.loads(done.stdout)
    assert profile["model"] == "plugin-net" and len(profile["splits"]) == 4


def test_a_broken_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_distribution(tmp_path, "splitmq.test-broken", "plugin_models:missing")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelRegistrationError, match="model plugin 'demo'"):
        load_model_plugins("splitmq.test-broken")


def test_the_worked_example_of_the_docs_runs() -> None:
    text = (REPO / "docs" / "models.md").read_text()
    example = text.split("### Worked example", 1)[1].split("```python\n", 1)[1].split("```")[0]
    try:
        exec(compile(example, "docs/models.md", "exec"), {"__name__": "docs_example"})
        assert "squeezenet-lite" in available_models()
    finally:
        if "squeezenet-lite" in available_models():
            unregister_model("squeezenet-lite")
