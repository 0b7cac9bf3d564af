"""Who may publish and read which topic: the access rules of every role, written once.

    rules = role_rules("device", "cam-1", prefix="splitmq")
    # [TopicRule("splitmq/req/+/+/cam-1", "write"), ..., TopicRule("splitmq/result/cam-1/+", ...)]

Both brokers render these rules: the Mosquitto `acl_file` of broker/mosquitto-secure.conf
(`broker.auth.acl_rules`) and the dynamic-security roles of `splitmq broker init`
(`broker.secure_profile.role_acls`). Every pattern comes from the builders of `schemas.topics`
and `schemas.discovery`, so a change of the topic layout changes both.

A node's own topics (status, telemetry, results, probes, state, discovery config) carry its
login, so a user's login must be its node id.

- device: writes its own requests (`req/<model>/<k>/<name>`, and direct ones
  `req/<model>/<k>/<name>/<worker>`: the request topic's device level is its login, and the
  worker answers on that device's result topic, so no device can have results sent into
  another's), its own probes, status, state and discovery config; reads only its own results
  (`result/<name>/+`, from every worker), the workers' telemetry, the model catalogs and
  everyone's status.
- worker: reads requests, subscribing only through the share group and to those addressed to it
  by name (`req/+/+/+/<name>`); writes results to any device but only under its own name
  (`result/+/<name>`: the device reads the answering worker from that level), its own catalogs
  (`catalog/+/<name>`), telemetry, status and discovery config. A stolen worker login can
  therefore answer requests it receives, in its own name only, until it is revoked.
- monitor: reads everything under the prefix, the broker's `$SYS` statistics and the discovery
  topics; writes nothing.
- homeassistant: Home Assistant's own login, also what `splitmq homeassistant remove` uses:
  reads what a monitor reads; writes Home Assistant's birth message and last will
  (`<discovery_prefix>/status`) and any node's discovery config (to withdraw one). It cannot
  write the nodes' own status, state or telemetry.
- bridge: an edge (site) broker's login at the core (`splitmq broker init --bridge`): writes
  what the edge's devices send (requests, direct ones included, device state, status and
  probes) and reads what comes back (results at every level, telemetry, catalogs, status). It
  cannot subscribe to the workers' share group or write results, catalogs or telemetry: workers
  live on the core only (a `$share` group is per broker). It writes status for any node id, as
  the core cannot tell which devices sit behind an edge.
- admin: reads and writes everything under the prefix (tests, tools).
- control: the profile's own administrator (`splitmq broker init --revoke`): the
  dynamic-security plugin's `$CONTROL` topics, and write access under the prefix to clear a
  revoked worker's retained status, telemetry and catalogs. Its password stays in the profile
  directory, beside the CA key; no node gets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.discovery import (
    DEFAULT_DISCOVERY_PREFIX,
    discovery_config_all,
    discovery_config_topic,
    discovery_status_topic,
)
from schemas.topics import Topics, check_segment

Role = Literal["device", "worker", "bridge", "monitor", "homeassistant", "admin", "control"]
Access = Literal["read", "write"]
DEFAULT_SHARE_GROUP = "splitmq-workers"
# The broker's own statistics, which only a monitor reads.
SYS_TOPICS = "$SYS/#"
# The dynamic-security plugin's command and response topics (Mosquitto 2.0).
CONTROL_TOPICS = "$CONTROL/dynamic-security/#"


@dataclass(frozen=True)
class TopicRule:
    """One grant: publish to (`write`) or receive from (`read`) the topics `pattern` matches.

    `subscribe` narrows a read rule to these SUBSCRIBE filters (e.g. only through a share
    group); empty means `pattern` itself. An acl_file cannot express it (Mosquitto 2.0 never
    checks SUBSCRIBE against one); the dynamic-security plugin enforces it.
    """

    pattern: str
    access: Access
    subscribe: tuple[str, ...] = ()

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The filters a client holding this read rule may subscribe with."""
        return self.subscribe or (self.pattern,)


def role_rules(
    role: Role,
    user: str,
    *,
    prefix: str = "splitmq",
    share_group: str = DEFAULT_SHARE_GROUP,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> tuple[TopicRule, ...]:
    """The rules of `user` with `role` (see the module docstring); everything else is refused."""
    topics = Topics(prefix)
    check_segment(user, "user name")
    if role == "device":
        return _device_rules(topics, user, discovery_prefix)
    if role == "worker":
        return _worker_rules(topics, user, share_group, discovery_prefix)
    if role == "bridge":
        return bridge_rules(topics)
    if role in ("monitor", "homeassistant"):
        everything = (topics.everything(), SYS_TOPICS, Topics(discovery_prefix).everything())
        reads = tuple(TopicRule(pattern, "read") for pattern in everything)
        if role == "monitor":
            return reads
        return (
            *reads,
            TopicRule(discovery_status_topic(discovery_prefix), "write"),
            TopicRule(discovery_config_all(discovery_prefix), "write"),
        )
    if role == "control":
        return (
            TopicRule(CONTROL_TOPICS, "write"),
            TopicRule(CONTROL_TOPICS, "read"),
            TopicRule(topics.everything(), "read"),
            TopicRule(topics.everything(), "write"),
        )
    return (TopicRule(topics.everything(), "read"), TopicRule(topics.everything(), "write"))


def _device_rules(topics: Topics, user: str, discovery_prefix: str) -> tuple[TopicRule, ...]:
    return (
        TopicRule(topics.requests_from(user), "write"),
        TopicRule(topics.direct_requests_from(user), "write"),
        TopicRule(topics.probe(user), "write"),
        TopicRule(topics.results_for(user), "read"),
        TopicRule(topics.telemetry_all(), "read"),
        TopicRule(topics.catalog_all(), "read"),
        TopicRule(topics.status_all(), "read"),
        TopicRule(topics.status(user), "write"),
        TopicRule(topics.device_state(user), "write"),
        TopicRule(discovery_config_topic(discovery_prefix, user), "write"),
        TopicRule(discovery_status_topic(discovery_prefix), "read"),
    )


def _worker_rules(
    topics: Topics, user: str, share_group: str, discovery_prefix: str
) -> tuple[TopicRule, ...]:
    # Requests as written in SUBSCRIBE: the share group, or those addressed to this worker. A
    # plain `<prefix>/req/...` subscription stays refused.
    requests = (topics.requests_shared_all(share_group), topics.direct_requests_to(user))
    return (
        TopicRule(topics.requests_all(), "read", subscribe=requests),
        # Results to every device, but the worker level is its own login.
        TopicRule(topics.results_from(user), "write"),
        TopicRule(topics.telemetry(user), "write"),
        TopicRule(topics.catalogs_from(user), "write"),
        TopicRule(topics.status(user), "write"),
        TopicRule(topics.status_all(), "read"),
        TopicRule(discovery_config_topic(discovery_prefix, user), "write"),
        TopicRule(discovery_status_topic(discovery_prefix), "read"),
    )


def subtree(topics: Topics, kind: str) -> str:
    """Every topic of one kind, at any depth: `<prefix>/<kind>/#`."""
    return topics.everything().removesuffix("#") + f"{check_segment(kind, 'topic kind')}/#"


def _one_level(topics: Topics, kind: str) -> str:
    """Every node's topic of one kind: `<prefix>/<kind>/+`."""
    return subtree(topics, kind).removesuffix("#") + "+"


def bridge_rules(topics: Topics) -> tuple[TopicRule, ...]:
    """An edge broker's rules at the core: out, what devices publish; in, what they read. The
    read patterns are the bridge's own SUBSCRIBE filters (`broker.bridge_config`), so the
    plugin's subscribe check and these rules agree; a `$share` filter matches none of them."""
    return (
        TopicRule(topics.requests_all(), "write"),
        TopicRule(topics.device_state_all(), "write"),
        TopicRule(topics.status_all(), "write"),
        TopicRule(_one_level(topics, "probe"), "write"),
        TopicRule(subtree(topics, "result"), "read"),
        TopicRule(subtree(topics, "telemetry"), "read"),
        TopicRule(subtree(topics, "catalog"), "read"),
        TopicRule(subtree(topics, "status"), "read"),
    )
