"""Announcing a node to Home Assistant over its own MQTT session.

The node's discovery config is published retained whenever the session connects, and again
after a random delay when Home Assistant's birth message ("online" on `<prefix>/status`) says
Home Assistant restarted, so a fleet does not answer in one burst. `remove()` publishes the
empty retained payload that makes Home Assistant forget a decommissioned node.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from mqtt_session.session import MqttSession
from schemas.discovery import HomeAssistantSettings, Role, discovery_payload
from schemas.topics import Topics

LOG = logging.getLogger(__name__)
BIRTH_PAYLOAD = b"online"


def announce_node(
    session: MqttSession,
    settings: HomeAssistantSettings,
    *,
    role: Role,
    node_id: str,
    topics: Topics,
    model: str,
    sw_version: str,
) -> HomeAssistantAnnouncer | None:
    """Attach an announcer for one node to its session (None when discovery is disabled)."""
    if not settings.enabled:
        return None
    payload = discovery_payload(
        role=role,
        node_id=node_id,
        topics=topics,
        sw_version=sw_version,
        model=model,
        origin_url=settings.origin_url,
    )
    return HomeAssistantAnnouncer(
        session,
        config_topic=settings.config_topic(node_id),
        payload=json.dumps(payload, separators=(",", ":")).encode("utf-8"),
        birth_topic=settings.status_topic,
        birth_delay_max_s=settings.birth_delay_max_s,
    )


class HomeAssistantAnnouncer:
    """Keeps one node's discovery config on the broker."""

    def __init__(
        self,
        session: MqttSession,
        *,
        config_topic: str,
        payload: bytes,
        birth_topic: str,
        birth_delay_max_s: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.session = session
        self.config_topic = config_topic
        self.payload = payload
        self.birth_topic = birth_topic
        self.birth_delay_max_s = birth_delay_max_s
        self.announcements = 0
        self._rng = rng
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        session.route(birth_topic, self._on_birth)
        session.on_connected(self.announce)

    def announce(self) -> None:
        """Publish the retained discovery config now."""
        with self._lock:
            self._timer = None
            self.announcements += 1
        self.session.publish(self.config_topic, self.payload, retain=True)

    def remove(self, timeout_s: float = 5.0) -> bool:
        """Withdraw the node from Home Assistant (empty retained config); True once acked."""
        self.cancel()
        info = self.session.publish(self.config_topic, b"", retain=True)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def cancel(self) -> None:
        """Drop a pending re-announcement (on shutdown)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _on_birth(self, message: mqtt.MQTTMessage) -> None:
        if message.retain or bytes(message.payload).strip() != BIRTH_PAYLOAD:
            # A retained birth is old news (connecting announced already); "offline" is
            # Home Assistant's last will.
            return
        delay = self._rng() * self.birth_delay_max_s
        with self._lock:
            if self._timer is not None:
                return  # one re-announcement is already due
            self._timer = threading.Timer(delay, self.announce)
            self._timer.daemon = True
            self._timer.start()
        LOG.debug("Home Assistant is online: announcing %s in %.2f s", self.config_topic, delay)
