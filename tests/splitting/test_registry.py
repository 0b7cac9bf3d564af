"""Model registry: the built-in models, their cuts, weights handling and fingerprints."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splitting.errors import (
    UnregisteredModelError,
    WeightsLoadError,
    WeightsUnavailableError,
)
from splitting.reference import DEFAULT_SERVER_PROFILE
from splitting.registry import DEFAULT_MODEL, available_models, load_model

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[2]
SERVER_PROFILE = DEFAULT_SERVER_PROFILE  # shipped inside the package
BUILTIN = (
    "efficientnet-lite0",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "vit_b_16",
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (a weights download) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("splitting tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_builtin_models_are_registered_default_first() -> None:
    names = available_models()
    assert set(BUILTIN) <= set(names)
    assert names[0] == DEFAULT_MODEL == "efficientnet-lite0"


def test_unknown_model_names_the_registered_ones() -> None:
    with pytest.raises(UnregisteredModelError, match="resnet18") as info:
        load_model("resnet19")
    assert "resnet19" in str(info.value)


@pytest.mark.skipif(not SERVER_PROFILE.is_file(), reason="measured server profile not present")
@pytest.mark.parametrize("name", BUILTIN)
def test_blocks_match_the_measured_server_profile(name: str) -> None:
    measured = json.loads(SERVER_PROFILE.read_text())["models"][name]
    model = load_model(name)
    assert model.n == measured["blocks"] == len(model.block_names)
    assert [list(shape) for shape in model.block_output_shapes()] == measured["out_shape"]


def test_split_shapes_frame_the_block_outputs() -> None:
    model = load_model("resnet18")
    shapes = model.split_shapes()
    assert len(shapes) == model.n + 1
    assert shapes[0] == (224, 224, 3)
    assert shapes[1:-1] == model.block_output_shapes()[:-1]
    assert shapes[-1] == ()
    assert model.block_names[:3] == ["stem", "maxpool", "layer1.0"]
    assert model.block_names[-1] == "classifier"


def _fingerprint_in_new_process(name: str) -> str:
    code = f"from splitting.registry import load_model; print(load_model({name!r}).fingerprint)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.integration  # starts a process per model
@pytest.mark.parametrize("name", ["resnet18", "efficientnet-lite0"])
def test_every_process_builds_the_same_weights(name: str) -> None:
    here = load_model(name)
    assert len(here.fingerprint) == 16
    int(here.fingerprint, 16)
    assert _fingerprint_in_new_process(name) == here.fingerprint
    again = load_model(name)
    first, second = here.module.state_dict(), again.module.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_building_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    load_model("mobilenet_v2")
    assert torch.equal(torch.rand(4), expected)


def test_fingerprint_tracks_weights_and_model_identity() -> None:
    lite_real = load_model("efficientnet-lite0")
    lite_random = load_model("efficientnet-lite0", weights="random")
    assert lite_real.weights == "imagenet"
    assert lite_real.fingerprint != lite_random.fingerprint
    assert load_model("resnet18").fingerprint != load_model("resnet50").fingerprint


def test_weights_from_a_local_file(tmp_path: Path) -> None:
    reference = load_model("resnet18")
    state = {key: value.clone() for key, value in reference.module.state_dict().items()}
    state["fc.bias"] += 1.0
    path = tmp_path / "tuned.pth"
    torch.save(state, path)
    tuned = load_model("resnet18", weights=str(path))
    assert torch.equal(tuned.module.state_dict()["fc.bias"], state["fc.bias"])
    assert tuned.fingerprint != reference.fingerprint
    # a checkpoint dict that wraps the state_dict loads the same weights
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "checkpoint.pt")
    wrapped = load_model("resnet18", weights=str(tmp_path / "checkpoint.pt"))
    assert wrapped.fingerprint == tuned.fingerprint


def test_weights_file_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_model("resnet18", weights=str(tmp_path / "missing.pth"))
    foreign = tmp_path / "mobilenet.pth"
    torch.save(load_model("mobilenet_v2").module.state_dict(), foreign)
    with pytest.raises(WeightsLoadError, match="does not fit"):
        load_model("resnet18", weights=str(foreign))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsLoadError, match="cannot read"):
        load_model("resnet18", weights=str(garbage))


def test_named_torchvision_weights_fail_fast_without_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("resnet18", weights="IMAGENET1K_V1")
    message = str(info.value)
    assert "https://download.pytorch.org/models/resnet18" in message
    assert "never downloads" in message
    assert "random" in message and "local file" in message
    assert not (tmp_path / "hub" / "checkpoints").exists() or not any(
        (tmp_path / "hub" / "checkpoints").iterdir()
    )


def test_named_torchvision_weights_load_from_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision  # type: ignore[import-untyped]

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = load_model("resnet18").module.state_dict()
    state["fc.bias"] = torch.arange(1000, dtype=torch.float32)
    torch.save(state, cache / url.rsplit("/", 1)[-1])
    cached = load_model("resnet18", weights="IMAGENET1K_V1")
    assert cached.weights == "IMAGENET1K_V1"
    assert torch.equal(cached.module.state_dict()["fc.bias"], state["fc.bias"])


def test_unknown_weights_names_list_the_known_ones() -> None:
    with pytest.raises(WeightsUnavailableError, match="IMAGENET1K_V1"):
        load_model("resnet18", weights="IMAGENET9K")
    with pytest.raises(WeightsUnavailableError, match="imagenet"):
        load_model("efficientnet-lite0", weights="IMAGENET9K")
