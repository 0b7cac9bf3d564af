"""The catalog names the prepare recipe's version and its integer resize target, so a client
knows which arithmetic made the model's input; an older catalog reads as the old recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_worker.catalog import model_catalog
from edge_worker.runner import echo_model_info
from schemas.errors import MessageError
from schemas.messages import encode_message, parse_catalog
from splitting.pixels import RECIPE_VERSION, prepare_image
from tests.support.spec_prepare import spec_prepare


def test_the_catalog_names_the_recipe_the_worker_prepares_with() -> None:
    catalog = model_catalog(echo_model_info(shapes=((224, 224, 3), (8,))))
    recipe = parse_catalog(encode_message(catalog)).prepare
    assert (recipe.recipe_version, recipe.resize_to, recipe.size) == (RECIPE_VERSION, 256, 224)
    photo = np.random.default_rng(3).integers(0, 256, (300, 410, 3), dtype=np.uint8)
    assert recipe.resize_to is not None
    expected = spec_prepare(photo, recipe.size, recipe.resize_to)
    assert np.array_equal(prepare_image(photo, recipe.size), expected)


def test_a_catalog_without_a_recipe_version_reads_as_the_pillow_recipe() -> None:
    catalog = json.loads(encode_message(model_catalog(echo_model_info())))
    del catalog["prepare"]["recipe_version"], catalog["prepare"]["resize_to"]
    recipe = parse_catalog(json.dumps(catalog)).prepare
    assert (recipe.recipe_version, recipe.resize_to) == (1, None)


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"resize_to": None}, "needs resize_to"),
        ({"resize_to": 15}, "smaller than size"),
        ({"recipe_version": 0}, "recipe_version"),
        ({"recipe_version": 10**9}, "recipe_version"),
        ({"resize_to": 2**20}, "resize_to"),
    ],
)
def test_a_recipe_the_wire_cannot_mean_is_refused(
    changes: dict[str, object], complaint: str
) -> None:
    catalog = json.loads(encode_message(model_catalog(echo_model_info())))
    catalog["prepare"].update(changes)
    with pytest.raises(MessageError, match=complaint):
        parse_catalog(json.dumps(catalog))
