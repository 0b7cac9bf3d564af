"""Where the edge worker answers, against a real Mosquitto: on the result topic of the device
named in the request topic, never on a ResponseTopic that names someone else's."""

from __future__ import annotations

import logging

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from tests.support.scaled_model import worker_config
from tests.support.worker_clients import TOPICS, Requester, echo_frame

pytestmark = pytest.mark.integration


def test_a_request_naming_another_devices_result_topic_is_refused_unanswered(
    broker_settings: BrokerSettings, requester: Requester, caplog: pytest.LogCaptureFixture
) -> None:
    victim = Requester(broker_settings, device_id="victim")
    config = worker_config(broker_settings, models=[{"name": "echo"}], runner="echo")
    try:
        with caplog.at_level(logging.WARNING), EdgeWorker(config) as worker:
            for rid in ("spoof-1", "spoof-2"):
                requester.send("echo", 1, echo_frame(rid), rid, reply_to=victim.topic)
            requester.send("echo", 1, echo_frame("after"), "after")
            # Same connection, same order: once "after" is answered both spoofs were handled.
            assert requester.wait(["after"])[0].status == "ok"
            # The worker answers the victim in order too, so a reply to a spoof would be in
            # before the reply to the victim's own later request.
            victim.send("echo", 1, echo_frame("own"), "own")
            assert victim.wait(["own"])[0].status == "ok"
            assert worker.link.foreign_reply_topics == 2
            assert worker.stats.snapshot().errors == 2
        assert sorted(victim.results) == ["own"], "the victim received the attacker's results"
        assert sorted(requester.results) == ["after"], "a refused request is not answered"
        refusals = [r for r in caplog.records if "ResponseTopic" in r.getMessage()]
        assert len(refusals) == 1, "a flood of refusals is logged once, then counted"
    finally:
        victim.close()


def test_a_request_without_a_response_topic_is_answered_on_its_devices_result_topic(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    config = worker_config(broker_settings, models=[{"name": "echo"}], runner="echo")
    with EdgeWorker(config):
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = b"bare"
        topic = TOPICS.request("echo", 1, requester.device_id)
        requester.client.publish(topic, echo_frame("bare"), 1, properties=props)
        (result,) = requester.wait(["bare"])
    assert result.status == "ok"
    assert requester.correlations == [b"bare"], "CorrelationData comes back as sent"
