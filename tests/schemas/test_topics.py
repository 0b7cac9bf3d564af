"""Topic names: built and parsed in one place, every level validated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from schemas.errors import TopicError
from schemas.topics import Topics


def test_builders() -> None:
    topics = Topics()
    assert (
        topics.request("efficientnet-lite0", 9, "cam-1") == "splitmq/req/efficientnet-lite0/9/cam-1"
    )
    assert topics.request_direct("m", 2, "cam-1", "w1") == "splitmq/req/m/2/cam-1/w1"
    assert (
        topics.request_shared("workers", "resnet18", 0) == "$share/workers/splitmq/req/resnet18/0/+"
    )
    assert topics.request_direct_filter("m", 2, "w1") == "splitmq/req/m/2/+/w1"
    assert topics.result("cam-1", "w1") == "splitmq/result/cam-1/w1"
    assert topics.result_inbox("cam-1") == "splitmq/result/cam-1"
    assert topics.results_for("cam-1") == "splitmq/result/cam-1/+"
    assert topics.results_from("w1") == "splitmq/result/+/w1"
    assert topics.telemetry("w1") == "splitmq/telemetry/w1"
    assert topics.telemetry_all() == "splitmq/telemetry/+"
    assert topics.status("w1") == "splitmq/status/w1"
    assert topics.status_all() == "splitmq/status/+"
    assert topics.probe("cam-1") == "splitmq/probe/cam-1"
    assert topics.catalog("efficientnet-lite0", "w1") == "splitmq/catalog/efficientnet-lite0/w1"
    assert topics.catalogs_of("efficientnet-lite0") == "splitmq/catalog/efficientnet-lite0/+"
    assert topics.catalogs_from("w1") == "splitmq/catalog/+/w1"
    assert topics.catalog_all() == "splitmq/catalog/+/+"


def test_filters_over_every_model_and_split() -> None:
    topics = Topics("site/a")
    assert topics.requests_all() == "site/a/req/#"
    assert topics.requests_from("cam-1") == "site/a/req/+/+/cam-1"
    assert topics.direct_requests_from("cam-1") == "site/a/req/+/+/cam-1/+"
    assert topics.requests_shared_all("g") == "$share/g/site/a/req/+/+/+"
    assert topics.direct_requests_to("w1") == "site/a/req/+/+/+/w1"
    assert topics.result_all() == "site/a/result/+/+"
    assert topics.everything() == "site/a/#"
    for build in (topics.requests_from, topics.direct_requests_from, topics.direct_requests_to):
        with pytest.raises(TopicError):
            build("a+b")
    with pytest.raises(TopicError):
        topics.requests_shared_all("$g")


def test_multi_level_prefix() -> None:
    topics = Topics("site/a/splitmq")
    assert topics.request("m", 3, "d") == "site/a/splitmq/req/m/3/d"
    assert topics.parse_request("site/a/splitmq/req/m/3/d") == ("m", 3, "d", None)
    with pytest.raises(TopicError):
        topics.parse_request("splitmq/req/m/3/d")


@pytest.mark.parametrize("prefix", ["", "a//b", "/a", "a/", "a/+", "#", "$SYS", "a\x00b", 5])
def test_bad_prefixes(prefix: Any) -> None:
    with pytest.raises(TopicError):
        Topics(prefix)


def test_parsers_invert_the_builders() -> None:
    topics = Topics("lab")
    for model, k in [("m", 0), ("efficientnet-lite0", 12), ("vit_b_16", 123456)]:
        assert topics.parse_request(topics.request(model, k, "cam-1")) == (model, k, "cam-1", None)
        direct = topics.request_direct(model, k, "cam-1", "w 2")
        assert topics.parse_request(direct) == (model, k, "cam-1", "w 2")
    assert topics.parse_telemetry(topics.telemetry("gpu-7")) == "gpu-7"
    assert topics.parse_status(topics.status("node é")) == "node é"
    assert topics.parse_result(topics.result("cam.1", "w 2")) == ("cam.1", "w 2")
    assert topics.parse_catalog(topics.catalog("efficientnet-lite0", "w1")) == (
        "efficientnet-lite0",
        "w1",
    )


@pytest.mark.parametrize("segment", ["", "a/b", "a+b", "a#", "$x", "nul\x00", None, 7])
def test_bad_segments(segment: Any) -> None:
    topics = Topics()
    for build in (
        lambda: topics.request(segment, 1, "d"),
        lambda: topics.request("m", 1, segment),
        lambda: topics.request_direct("m", 1, segment, "w"),
        lambda: topics.request_direct("m", 1, "d", segment),
        lambda: topics.request_direct_filter("m", 1, segment),
        lambda: topics.request_shared(segment, "m", 1),
        lambda: topics.result(segment, "w"),
        lambda: topics.result("d", segment),
        lambda: topics.result_inbox(segment),
        lambda: topics.results_for(segment),
        lambda: topics.results_from(segment),
        lambda: topics.telemetry(segment),
        lambda: topics.status(segment),
        lambda: topics.probe(segment),
        lambda: topics.catalog(segment, "w"),
        lambda: topics.catalog("m", segment),
        lambda: topics.catalogs_of(segment),
        lambda: topics.catalogs_from(segment),
    ):
        with pytest.raises(TopicError):
            build()


@pytest.mark.parametrize("k", [-1, True, 1.5, "3", None])
def test_bad_splits(k: Any) -> None:
    with pytest.raises(TopicError, match="split"):
        Topics().request("m", k, "d")


def test_numpy_split_is_an_integer() -> None:
    topic = Topics().request("m", np.int64(4), "d")  # type: ignore[arg-type]
    assert topic == "splitmq/req/m/4/d"


@pytest.mark.parametrize(
    "topic",
    [
        "splitmq/req/m",
        "splitmq/req/m/3",  # no device level (the layout before device ids)
        "splitmq/req/m/3/d/w/extra",
        "splitmq/req//3/d",
        "splitmq/req/m/03/d",
        "splitmq/req/m/-1/d",
        "splitmq/req/m/+3/d",
        "splitmq/req/m/x/d",
        "splitmq/req/m/３/d",
        "splitmq/req/m//d",
        "splitmq/req/m/3/",
        "splitmq/req/m/3/+",
        "splitmq/req/m/3/$d",
        "splitmq/req/m/3/d/",
        "splitmq/req/m/3/d/#",
        "other/req/m/3/d",
        "$share/g/splitmq/req/m/3/d",
        "splitmq/telemetry/m",
    ],
)
def test_parse_request_refuses_other_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics().parse_request(topic)


@pytest.mark.parametrize(
    "topic", ["splitmq/telemetry/", "splitmq/telemetry/a/b", "splitmq/status/w"]
)
def test_parse_telemetry_refuses_other_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics().parse_telemetry(topic)


def test_topic_length_limit() -> None:
    with pytest.raises(TopicError, match="65535"):
        Topics().result("d" * 70000, "w")


@pytest.mark.parametrize(
    "topic",
    [
        "splitmq/catalog/",
        "splitmq/catalog/a",
        "splitmq/catalog/a/b/c",
        "splitmq/catalog/+/w",
        "splitmq/catalog/m/",
        "splitmq/status/m",
    ],
)
def test_parse_catalog_refuses_other_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics().parse_catalog(topic)


@pytest.mark.parametrize(
    "topic",
    ["splitmq/result/d", "splitmq/result/d/w/x", "splitmq/result/d/", "splitmq/result/+/w"],
)
def test_parse_result_refuses_topics_without_one_worker(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics().parse_result(topic)
