"""The retained model catalog: a client that knows only the topic prefix learns each model's
fingerprint, per-split shapes, dtypes and codecs from `<prefix>/catalog/+/+`, and the frames it
builds from that alone are served."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from broker.launcher import MosquittoBroker
from edge_worker.config import WorkerConfig
from edge_worker.runner import EchoTailRunner, ModelTailRunner, echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.frame import ModelInfo, encode_frame
from schemas.messages import ModelCatalogMessage, PrepareRecipe
from schemas.topics import Topics
from splitting.images import sample_images
from splitting.registry import load_model
from tests.support.spec_prepare import spec_prepare
from tests.support.waiting import wait_until
from tests.support.worker_clients import Requester, read_catalogs

pytestmark = pytest.mark.integration

TOPICS = Topics()
LITE0 = "efficientnet-lite0"


def _config(settings: BrokerSettings, **overrides: object) -> WorkerConfig:
    values: dict[str, object] = {
        "broker": settings,
        "worker_id": "catalog-worker",
        "models": [{"name": "echo"}],
        "runner": "echo",
        "device": "cpu",
        "max_batch": 1,
        "telemetry_interval_s": 0.5,
    }
    values.update(overrides)
    return WorkerConfig.model_validate(values)


def frame_from_catalog(catalog: ModelCatalogMessage, split: int, codec: str, rid: str) -> bytes:
    """A frame built from the catalog alone: its shape, dtype and fingerprint, nothing else."""
    spec = catalog.splits[split]
    tensor = np.full(spec.shape, 7, dtype=np.dtype(spec.dtype))
    return encode_frame(
        tensor,
        codec=codec,
        request_id=rid,
        model=catalog.model,
        fingerprint=catalog.fingerprint,
        split=split,
    )


def prepare_by_recipe(image: np.ndarray, recipe: PrepareRecipe) -> np.ndarray:
    """The prepare recipe as a client written from FORMAT.md would code it."""
    assert (recipe.resize, recipe.resample, recipe.crop) == ("shorter_side", "bilinear", "center")
    assert (recipe.channels, recipe.layout, recipe.dtype) == ("RGB", "HWC", "uint8")
    assert recipe.recipe_version == 2 and recipe.resize_to is not None
    return spec_prepare(image, recipe.size, recipe.resize_to)


def assert_matches(catalog: ModelCatalogMessage, info: ModelInfo) -> None:
    assert catalog.model == info.name
    assert catalog.fingerprint == info.fingerprint
    assert catalog.n == info.n
    assert [tuple(spec.shape) for spec in catalog.splits] == list(info.split_shapes[:-1])
    assert [spec.split for spec in catalog.splits] == list(range(info.n))


def test_a_late_subscriber_gets_each_models_catalog_and_its_frames_are_served(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    infos = [
        echo_model_info("echo"),
        echo_model_info("echo-wide", shapes=((32, 32, 3), (8, 4, 4), (10,))),
    ]
    runner = EchoTailRunner(infos)
    config = _config(broker_settings, models=[{"name": "echo"}, {"name": "echo-wide"}])
    with EdgeWorker(config, runner):
        catalogs = read_catalogs(broker_settings, {"echo", "echo-wide"})
        assert set(catalogs) == {"echo", "echo-wide"}
        for info in infos:
            catalog = catalogs[info.name]
            assert_matches(catalog, info)
            assert catalog.splits[0].dtype == "uint8"
            assert catalog.prepare.size == info.split_shapes[0][0]
            assert all(spec.dtype == "float32" for spec in catalog.splits[1:])
            # Every codec the catalog names at every split is one the worker decodes there.
            sent = []
            for spec in catalog.splits:
                for codec in spec.codecs:
                    rid = f"{info.name}-{spec.split}-{codec}"
                    requester.send(
                        info.name,
                        spec.split,
                        frame_from_catalog(catalog, spec.split, codec, rid),
                        rid,
                    )
                    sent.append(rid)
            results = requester.wait(sent)
            assert [(r.request_id, r.status) for r in results] == [(rid, "ok") for rid in sent]


def test_codecs_a_catalog_leaves_out_are_the_ones_the_worker_refuses(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    # Split 1 is image-shaped, so an image codec can carry it: only the dtype rule refuses it.
    info = echo_model_info("echo-rgb", shapes=((16, 16, 3), (8, 8, 3)))
    config = _config(broker_settings, models=[{"name": "echo-rgb"}])
    with EdgeWorker(config, EchoTailRunner([info])):
        catalog = read_catalogs(broker_settings, {"echo-rgb"})["echo-rgb"]
        image, inner = catalog.splits
        left_out = [
            (spec.split, codec, dtype)
            for spec, codec, dtype in [(image, "int8", np.float32), (inner, "jpeg", np.uint8)]
            if codec not in spec.codecs
        ]
        assert len(left_out) == 2, catalog.splits
        for split, codec, dtype in left_out:
            frame = encode_frame(
                np.zeros(catalog.splits[split].shape, dtype=dtype),
                codec=codec,
                request_id=f"{codec}-{split}",
                model=catalog.model,
                fingerprint=catalog.fingerprint,
                split=split,
            )
            requester.send(catalog.model, split, frame, f"{codec}-{split}")
        results = requester.wait([f"{codec}-{split}" for split, codec, _ in left_out])
        assert [(r.status, r.error and r.error.code) for r in results] == [
            ("error", "bad_input"),
            ("error", "bad_input"),
        ]


def test_the_catalog_is_published_again_after_a_broker_restart(
    broker: MosquittoBroker, broker_settings: BrokerSettings
) -> None:
    with EdgeWorker(_config(broker_settings)) as worker:
        assert set(read_catalogs(broker_settings, {"echo"})) == {"echo"}
        broker.restart()  # no persistence: the retained catalog is gone with the old broker
        wait_until(lambda: worker.link.session.connection >= 2, 15, "the worker to reconnect")
        # Retained, or live if the reader subscribed before the worker's reconnect hook ran.
        catalog = read_catalogs(broker_settings, {"echo"}, retained_only=False)
        assert set(catalog) == {"echo"}
        assert_matches(catalog["echo"], echo_model_info())


def test_a_model_without_an_image_input_gets_no_catalog_and_is_still_served(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    flat = echo_model_info("flat", shapes=((12,), (6,)))
    runner = EchoTailRunner([flat, echo_model_info("echo")])
    config = _config(broker_settings, models=[{"name": "flat"}, {"name": "echo"}])
    with EdgeWorker(config, runner):
        catalogs = read_catalogs(broker_settings, {"echo", "flat"}, timeout_s=2)
        assert set(catalogs) == {"echo"}
        frame = encode_frame(
            np.zeros((6,), dtype=np.float32),
            codec="lossless",
            request_id="flat-1",
            model="flat",
            fingerprint=flat.fingerprint,
            split=1,
        )
        requester.send("flat", 1, frame, "flat-1")
        assert requester.wait(["flat-1"])[0].status == "ok"


def test_lite0_catalog_alone_builds_frames_the_real_tails_answer(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    torch.set_num_threads(1)  # the test machine's cores are shared
    lite0 = load_model(LITE0)
    inner = lite0.n // 2
    runner = ModelTailRunner({LITE0: lite0}, {LITE0: [0, inner]})
    with EdgeWorker(_config(broker_settings, models=[{"name": LITE0}], runner="model"), runner):
        catalog = read_catalogs(broker_settings, {LITE0})[LITE0]
        assert_matches(catalog, lite0.model_info())
        # The recipe, coded from its fields, prepares a photo bit-identically to the model.
        _, photo = sample_images()[0]
        prepared = prepare_by_recipe(photo, catalog.prepare)
        assert np.array_equal(prepared, lite0.prepare_image(photo))
        image = encode_frame(
            prepared,
            codec="webp",
            request_id="lite0-image",
            model=catalog.model,
            fingerprint=catalog.fingerprint,
            split=0,
        )
        assert "webp" in catalog.splits[0].codecs
        requester.send(LITE0, 0, image, "lite0-image")
        requester.send(
            LITE0, inner, frame_from_catalog(catalog, inner, "int8", "lite0-inner"), "lite0-inner"
        )
        results = requester.wait(["lite0-image", "lite0-inner"])
        assert [r.status for r in results] == ["ok", "ok"]
        # The unsplit model's answer for the prepared photo (webp is lossless).
        logits = lite0.forward(lite0.preprocess(prepared))
        assert results[0].top5[0].index == int(logits.argmax())
