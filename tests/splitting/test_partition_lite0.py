"""The default model with its real ImageNet weights classifies real photos correctly."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from splitting.partition import SplitModel
from splitting.registry import load_model

torch.set_num_threads(min(2, torch.get_num_threads()))

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
COFFEE = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    return load_model("efficientnet-lite0")


def _top1(model: SplitModel, image: np.ndarray, k: int) -> str:
    x = model.preprocess(model.prepare_image(image))
    logits = model.tail(model.head(x, k), k)
    return model.labels[int(logits.argmax())]


def test_labels_are_imagenets(lite0: SplitModel) -> None:
    assert len(lite0.labels) == 1000
    assert lite0.labels[281] == "tabby" and lite0.labels[967] == "espresso"


@pytest.mark.parametrize("k", [0, 5, 13, 18])
def test_chelsea_is_a_cat_and_coffee_is_coffee_at_any_split(lite0: SplitModel, k: int) -> None:
    assert _top1(lite0, skimage.data.chelsea(), k) in CATS
    assert _top1(lite0, skimage.data.coffee(), k) in COFFEE


def test_random_weights_do_not_know_cats() -> None:
    random_lite0 = load_model("efficientnet-lite0", weights="random")
    x = random_lite0.preprocess(random_lite0.prepare_image(skimage.data.chelsea()))
    assert random_lite0.labels[int(random_lite0.forward(x).argmax())] not in CATS
