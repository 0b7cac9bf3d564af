"""The access rules of each role, written once (broker.access) and rendered twice: as a
Mosquitto acl_file (broker.auth) and as dynamic-security roles (broker.secure_profile)."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
import pytest

from broker.access import role_rules
from broker.auth import acl_rules
from broker.errors import AuthFileError
from broker.secure_profile import role_acls
from schemas.discovery import discovery_config_topic
from schemas.topics import Topics

PREFIX = "site/a"
DISCOVERY = "ha"
ROLES = ["device", "worker", "monitor", "admin"]


def acl_file_grants(lines: list[str]) -> set[tuple[str, str]]:
    grants = set()
    for line in lines:
        keyword, access, pattern = line.split(" ")
        assert keyword == "topic"
        kinds = ("read", "write") if access == "readwrite" else (access,)
        grants |= {(pattern, kind) for kind in kinds}
    return grants


def dynsec_grants(acls: list[dict[str, Any]]) -> set[tuple[str, str]]:
    kinds = {"publishClientSend": "write", "publishClientReceive": "read"}
    assert all(acl["allow"] for acl in acls)
    return {(acl["topic"], kinds[acl["acltype"]]) for acl in acls if acl["acltype"] in kinds}


@pytest.mark.parametrize("role", ROLES)
def test_the_acl_file_and_the_dynsec_role_grant_the_same_rules(role: Any) -> None:
    from_file = acl_file_grants(acl_rules(role, PREFIX, "n1", discovery_prefix=DISCOVERY))
    from_dynsec = dynsec_grants(role_acls("n1", role, prefix=PREFIX, discovery_prefix=DISCOVERY))
    rules = role_rules(role, "n1", prefix=PREFIX, discovery_prefix=DISCOVERY)
    assert from_file == from_dynsec == {(rule.pattern, rule.access) for rule in rules}


@pytest.mark.parametrize("role", ROLES)
def test_the_dynsec_role_subscribes_only_where_a_read_rule_allows(role: Any) -> None:
    acls = role_acls("n1", role, prefix=PREFIX, share_group="g", discovery_prefix=DISCOVERY)
    subscriptions = {acl["topic"] for acl in acls if acl["acltype"] == "subscribePattern"}
    rules = role_rules(role, "n1", prefix=PREFIX, share_group="g", discovery_prefix=DISCOVERY)
    reads = [rule for rule in rules if rule.access == "read"]
    assert subscriptions == {topic for rule in reads for topic in rule.subscriptions}


def _allowed(role: Any, user: str, access: str, topic: str) -> bool:
    rules = role_rules(role, user, prefix=PREFIX, discovery_prefix=DISCOVERY)
    return any(r.access == access and mqtt.topic_matches_sub(r.pattern, topic) for r in rules)


def test_a_device_writes_the_topics_it_publishes_and_no_other_devices() -> None:
    topics = Topics(PREFIX)
    own = [
        topics.request("m", 3, "cam-1"),
        topics.request_direct("m", 3, "cam-1", "w1"),
        topics.probe("cam-1"),
        topics.status("cam-1"),
        topics.device_state("cam-1"),
        discovery_config_topic(DISCOVERY, "cam-1"),
    ]
    assert all(_allowed("device", "cam-1", "write", topic) for topic in own)
    others = [topic.replace("cam-1", "cam-2") for topic in own]
    others += [topics.result("cam-1", "w1"), topics.telemetry("w1"), topics.catalog("m", "w1")]
    assert not any(_allowed("device", "cam-1", "write", topic) for topic in others)
    assert _allowed("device", "cam-1", "read", topics.result("cam-1", "w1"))
    assert not _allowed("device", "cam-1", "read", topics.result("cam-2", "w1"))


def test_a_worker_answers_every_device_but_speaks_only_for_itself() -> None:
    topics = Topics(PREFIX)
    for topic in (topics.result("cam-7", "w1"), topics.telemetry("w1"), topics.catalog("m", "w1")):
        assert _allowed("worker", "w1", "write", topic)
    theirs = [
        topics.telemetry("w2"),
        topics.status("w2"),
        topics.request("m", 1, "w1"),
        topics.result("cam-7", "w2"),
        topics.catalog("m", "w2"),
    ]
    for topic in theirs:
        assert not _allowed("worker", "w1", "write", topic)


def test_a_user_name_that_is_no_topic_level_is_refused_by_the_acl_file() -> None:
    with pytest.raises(AuthFileError, match="'/'"):
        acl_rules("device", PREFIX, "a/b")
