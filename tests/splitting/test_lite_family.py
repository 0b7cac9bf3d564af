"""EfficientNet-Lite1 and -Lite2: packaged ImageNet weights (never downloaded), a cut that is
exact at every split, and shipped device profiles with natural bottlenecks inside the model."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import skimage.data
import torch
from efficientnet_lite_pytorch import EfficientNet

from splitmq.cli import main
from splitting.partition import SplitModel
from splitting.reference import has_reference, reference_model_profile
from splitting.registry import load_model
from splitting.zoo import lite_weights_path

torch.set_num_threads(min(2, torch.get_num_threads()))

LARGER = ("efficientnet-lite1", "efficientnet-lite2")
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
COFFEE = {"espresso", "cup", "coffee mug"}
INNER_CODECS = ("int8", "int5", "int4")  # quantized frames: where bottlenecks come from


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (a weights download) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("splitting tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module", params=LARGER)
def lite(request: pytest.FixtureRequest) -> SplitModel:
    return load_model(request.param)


def _top1(model: SplitModel, image: np.ndarray, k: int) -> str:
    x = model.preprocess(model.prepare_image(image))
    return model.labels[int(model.tail(model.head(x, k), k).argmax())]


def test_loads_the_packaged_weights_at_the_packages_resolution(lite: SplitModel) -> None:
    assert lite.weights == "imagenet"
    assert lite.input_size == EfficientNet.get_image_size(lite.name)
    assert lite.split_shapes()[0] == (lite.input_size, lite.input_size, 3)
    packaged = torch.load(lite_weights_path(lite.name), map_location="cpu", weights_only=True)
    state = lite.module.state_dict()
    assert set(packaged) <= set(state)
    assert all(torch.equal(state[key], value) for key, value in packaged.items())
    assert lite.fingerprint != load_model(lite.name, weights="random").fingerprint


def test_the_cut_is_the_familys_stem_blocks_head(lite: SplitModel) -> None:
    blocks = len(lite.module._blocks)  # type: ignore[arg-type]
    assert lite.block_names == ["stem", *(f"blocks.{i}" for i in range(blocks)), "head"]
    assert lite.block_output_shapes()[-1] == (1000,)


def test_real_weights_know_a_cat_and_a_coffee_at_both_ends_and_midway(lite: SplitModel) -> None:
    for k in (0, lite.n // 2, lite.n):
        assert _top1(lite, skimage.data.chelsea(), k) in CATS, f"split {k}"
        assert _top1(lite, skimage.data.coffee(), k) in COFFEE, f"split {k}"


@pytest.mark.slow  # every split of both models
def test_every_split_is_exact_on_a_real_image(lite: SplitModel) -> None:
    x = lite.preprocess(lite.prepare_image(skimage.data.chelsea()))
    assert lite.inexact_splits(x) == []


def test_the_shipped_profile_has_natural_bottlenecks_inside_the_model(lite: SplitModel) -> None:
    assert has_reference(lite.name)
    profile = reference_model_profile(lite.name)
    assert (profile.model, profile.n, profile.fingerprint) == (lite.name, lite.n, lite.fingerprint)
    assert profile.images == 61
    for codec in INNER_CODECS:
        inner = profile.candidates(codec)[1:-1]
        assert inner, f"{lite.name}: no natural bottleneck under {codec}"
        for k in inner:
            assert profile.agreement_at(k, codec) is not None


@pytest.mark.slow  # profiles each model through the CLI
@pytest.mark.parametrize("name", LARGER)
def test_a_fresh_profile_finds_natural_bottlenecks(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", "--model", name, "--json", "--images", "2", "--repeats", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == name
    inner = data["candidates"][1:-1]
    assert inner, f"{name}: no natural bottleneck under {data['codec']}"
