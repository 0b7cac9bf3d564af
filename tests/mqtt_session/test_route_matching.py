"""The session's topic matching agrees with paho's topic_matches_sub on MQTT's rules."""

from __future__ import annotations

import itertools

import paho.mqtt.client as mqtt
import pytest

from mqtt_session.session import filter_matches

FILTERS = [
    "#", "+", "a", "a/#", "a/+", "a/b", "+/b", "+/+", "a/+/c", "a/b/#", "+/#", "/", "/+", "+/",
    "a//c", "a/+/#", "$SYS/#", "$SYS/+", "splitmq/req/echo/1/+", "splitmq/req/+/+/+/w1",
]  # fmt: skip
TOPICS = [
    "a", "a/b", "a/b/c", "a/c", "b", "b/b", "/", "/a", "a/", "a//c", "$SYS", "$SYS/x",
    "$SYS/x/y", "splitmq/req/echo/1/cam-1", "splitmq/req/echo/1/cam-1/w1", "", "a/b/c/d",
]  # fmt: skip


@pytest.mark.parametrize(("topic_filter", "topic"), list(itertools.product(FILTERS, TOPICS)))
def test_matches_as_paho_does(topic_filter: str, topic: str) -> None:
    levels = tuple(topic_filter.split("/"))
    assert filter_matches(levels, topic) == mqtt.topic_matches_sub(topic_filter, topic)
