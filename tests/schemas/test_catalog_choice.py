"""Which retained catalog a client believes: only an online worker's, the same for everyone."""

from __future__ import annotations

from schemas.catalogs import trusted_catalogs
from schemas.messages import ModelCatalogMessage, PrepareRecipe, SplitSpec

MODEL = "efficientnet-lite0"


def _catalog(fingerprint: str, model: str = MODEL) -> ModelCatalogMessage:
    return ModelCatalogMessage(
        model=model,
        fingerprint=fingerprint,
        n=1,
        splits=[SplitSpec(split=0, shape=[224, 224, 3], dtype="uint8", codecs=["lossless"])],
        prepare=PrepareRecipe(size=224, crop_fraction=0.875),
    )


def test_an_offline_workers_catalog_is_never_chosen() -> None:
    good, poisoned = _catalog("good"), _catalog("poisoned")
    catalogs = {(MODEL, "w1"): good, (MODEL, "w2"): poisoned}
    assert trusted_catalogs(catalogs, online={"w1"}) == {MODEL: ("w1", good)}
    assert trusted_catalogs(catalogs, online=set()) == {}


def test_the_fingerprint_most_online_workers_publish_wins_then_the_smallest_id() -> None:
    a, b = _catalog("build-a"), _catalog("build-b")
    catalogs = {(MODEL, "w1"): a, (MODEL, "w2"): b, (MODEL, "w3"): b}
    assert trusted_catalogs(catalogs, online={"w1", "w2", "w3"}) == {MODEL: ("w2", b)}
    assert trusted_catalogs(catalogs, online={"w1", "w3"}) == {MODEL: ("w1", a)}


def test_a_catalog_on_another_models_topic_is_ignored() -> None:
    catalogs = {("other", "w1"): _catalog("x"), (MODEL, "w1"): _catalog("y")}
    chosen = trusted_catalogs(catalogs, online={"w1"})
    assert set(chosen) == {MODEL} and chosen[MODEL][1].fingerprint == "y"
