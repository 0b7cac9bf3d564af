"""A worker frozen mid-stream (SIGSTOP): how many requests get no reply, by receive maximum.

    python -m splitmq.bench.frozen_worker [--json out.json]

A real Mosquitto (the project's broker/mosquitto.conf), two echo workers in one share group, each
in its own process, and one plain MQTT client sending one small request every 0.5 s (2 req/s)
with a 5 s deadline of its own. After `FREEZE_AFTER_S` one worker is stopped with SIGSTOP for
`FREEZE_S`, then continued. Counted per request: answered within the deadline, answered late,
never answered. Run once per worker `queue_capacity` (its MQTT ReceiveMaximum) in
`RECEIVE_MAXIMA`: the question is whether holding fewer unacknowledged requests strands fewer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import ExitStack
from typing import Any

from broker.launcher import MosquittoBroker
from mqtt_session.client import BrokerSettings
from schemas.frame import encode_frame
from splitmq.bench.decode_stall import Client
from splitmq.worker_process import ECHO_MODEL, echo_worker_config, worker_process

from edge_worker.runner import echo_model_info

RATE_HZ = 2.0
DEADLINE_S = 5.0
FREEZE_AFTER_S = 4.0
FREEZE_S = 10.0
RUN_S = 24.0
RECEIVE_MAXIMA = (64, 1)


def _frame(rid: str) -> bytes:
    info = echo_model_info()
    return encode_frame(
        [0.0] * info.split_shapes[1][0],
        codec="lossless",
        request_id=rid,
        model=info.name,
        fingerprint=info.fingerprint,
        split=1,
    )


def run_once(broker: MosquittoBroker, receive_maximum: int) -> dict[str, Any]:
    settings = BrokerSettings(host=broker.host, port=broker.port)
    with ExitStack() as stack:
        pids = []
        for name in ("frozen", "live"):
            config = echo_worker_config(
                settings, worker_id=f"{name}-{receive_maximum}", max_batch=1,
                queue_capacity=receive_maximum,
            )  # fmt: skip
            stack.enter_context(worker_process(config, quiet=True))
        time.sleep(6.0)  # both connected and subscribed (warm-up of an echo runner is instant)
        pids = _worker_pids(receive_maximum)
        client = Client(settings)
        client.topic_model = ECHO_MODEL  # type: ignore[attr-defined]
        try:
            return _stream(client, pids["frozen"], receive_maximum)
        finally:
            client.session.stop()


def _worker_pids(receive_maximum: int) -> dict[str, int]:
    """Worker pids by id, from /proc (each worker's config file names its id)."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"edge_worker.cli" not in cmdline:
            continue
        config = open(cmdline[cmdline.index(b"--config") + 1], encoding="utf-8").read()
        for name in ("frozen", "live"):
            if f"worker_id: {name}-{receive_maximum}" in config:
                found[name] = int(entry)
    return found


def _stream(client: Client, frozen_pid: int, receive_maximum: int) -> dict[str, Any]:
    from schemas.topics import Topics
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topics = Topics()
    rids: list[tuple[str, float]] = []
    started = time.monotonic()
    frozen = thawed = False
    i = 0
    while time.monotonic() - started < RUN_S:
        now = time.monotonic() - started
        if not frozen and now >= FREEZE_AFTER_S:
            os.kill(frozen_pid, signal.SIGSTOP)
            frozen = True
        if frozen and not thawed and now >= FREEZE_AFTER_S + FREEZE_S:
            os.kill(frozen_pid, signal.SIGCONT)
            thawed = True
        rid = f"r{receive_maximum}-{i}"
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.result("bomber")
        props.CorrelationData = rid.encode()
        client.sent[rid] = time.perf_counter()
        client.session.publish(
            topics.request(ECHO_MODEL, 1, "bomber"), _frame(rid), properties=props
        )
        rids.append((rid, now))
        i += 1
        time.sleep(1.0 / RATE_HZ)
    time.sleep(DEADLINE_S + 3.0)
    return _count(client, rids, receive_maximum)


def _count(client: Client, rids: list[tuple[str, float]], receive_maximum: int) -> dict[str, Any]:
    on_time, late, never = [], [], []
    for rid, at in rids:
        rtt = client.rtt_ms(rid)
        if rtt is None:
            never.append(round(at, 1))
        elif rtt > DEADLINE_S * 1000.0:
            late.append(round(at, 1))
        else:
            on_time.append(rid)
    return {
        "receive_maximum": receive_maximum,
        "sent": len(rids),
        "answered_within_deadline": len(on_time),
        "answered_late": len(late),
        "no_reply": len(never),
        "no_reply_sent_at_s": never,
        "late_sent_at_s": late,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    runs = []
    for receive_maximum in RECEIVE_MAXIMA:
        with MosquittoBroker() as broker:
            runs.append(run_once(broker, receive_maximum))
    report = {
        "bench": "frozen_worker",
        "rate_hz": RATE_HZ,
        "deadline_s": DEADLINE_S,
        "freeze": {"after_s": FREEZE_AFTER_S, "for_s": FREEZE_S},
        "worker_keepalive_s": 2,
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
