"""publish_properties packs the very bytes paho's own Properties packs, and paho reads them back."""

from __future__ import annotations

import itertools

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from mqtt_session.properties import publish_properties

TOPIC = "splitmq/result/cam-1"
TOKEN = bytes(range(16))


def _paho(**given: object) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in given.items():
        setattr(props, name, value)
    return props


@pytest.mark.parametrize(
    ("topic", "token", "expiry"),
    list(itertools.product([None, TOPIC, "é/ü"], [None, TOKEN, b""], [None, 1, 120, 2**32 - 1])),
)
def test_packs_what_paho_packs_and_reads_back(
    topic: str | None, token: bytes | None, expiry: int | None
) -> None:
    given = {"ResponseTopic": topic, "CorrelationData": token, "MessageExpiryInterval": expiry}
    reference = _paho(**{name: value for name, value in given.items() if value is not None})
    fast = publish_properties(response_topic=topic, correlation_data=token, expiry_s=expiry)
    packed = fast.pack()
    assert packed == reference.pack()
    read = Properties(PacketTypes.PUBLISH)
    read.unpack(packed)
    for name, value in given.items():
        assert getattr(read, name, None) == value


def test_other_properties_keep_pahos_checks_and_pack_in_pahos_order() -> None:
    fast = publish_properties(correlation_data=TOKEN)
    fast.UserProperty = ("splitmq-exact", "1")
    fast.UserProperty = ("b", "2")
    fast.PayloadFormatIndicator = 1
    reference = _paho(PayloadFormatIndicator=1, CorrelationData=TOKEN)
    reference.UserProperty = [("splitmq-exact", "1"), ("b", "2")]
    assert fast.pack() == reference.pack()
    with pytest.raises(MQTTException):
        fast.PayloadFormatIndicator = 2
    with pytest.raises(MQTTException):
        fast.ReceiveMaximum = 5  # not a PUBLISH property
