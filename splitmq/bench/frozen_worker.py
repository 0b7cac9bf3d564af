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
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.launcher import MosquittoBroker
from edge_worker.config import save_worker_config
from edge_worker.runner import echo_model_info
from mqtt_session.client import BrokerSettings
from schemas.frame import encode_frame
from schemas.topics import Topics
from splitmq.bench.decode_stall import Client
from splitmq.bench.report import emit_with_provenance
from splitmq.worker_process import ECHO_MODEL, echo_worker_config

RATE_HZ = 2.0
DEADLINE_S = 5.0
FREEZE_AFTER_S = 4.0
FREEZE_S = 10.0
RUN_S = 24.0
RECEIVE_MAXIMA = (64, 1)
TOPICS = Topics()
DEVICE = "steady"


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
        processes = {
            name: stack.enter_context(
                _worker(settings, f"{name}-{receive_maximum}", receive_maximum)
            )
            for name in ("frozen", "live")
        }
        client = Client(settings, device=DEVICE)
        try:
            _wait_both_serving(client)
            return _stream(client, processes["frozen"], receive_maximum)
        finally:
            os.kill(processes["frozen"].pid, signal.SIGCONT)  # stoppable, whatever happened
            client.session.stop()


@contextmanager
def _worker(
    settings: BrokerSettings, worker_id: str, receive_maximum: int
) -> Iterator[subprocess.Popen[bytes]]:
    """`edge-worker` in its own process (its pid is what SIGSTOP needs), stopped at the end."""
    config = echo_worker_config(
        settings, worker_id=worker_id, max_batch=1, queue_capacity=receive_maximum
    )
    with tempfile.TemporaryDirectory(prefix="splitmq-frozen-") as directory:
        path = Path(directory) / "worker.yaml"
        save_worker_config(config, path)
        command = [sys.executable, "-m", "edge_worker.cli", "--config", str(path), "-q"]
        process = subprocess.Popen(command)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_both_serving(client: Client) -> None:
    """Until two requests in a row were answered: the share group alternates, so both are in."""
    answered = 0
    for attempt in range(120):
        rid = f"ready-{attempt}"
        _send(client, rid)
        answered = answered + 1 if client.wait([rid], 0.5) else 0
        if answered >= 4:
            return
    raise RuntimeError("the two workers did not both answer within 60 s")


def _send(client: Client, rid: str) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = TOPICS.result_inbox(DEVICE)
    props.CorrelationData = rid.encode()
    client.sent[rid] = time.perf_counter()
    client.session.publish(TOPICS.request(ECHO_MODEL, 1, DEVICE), _frame(rid), properties=props)


def _stream(
    client: Client, frozen: subprocess.Popen[bytes], receive_maximum: int
) -> dict[str, Any]:
    rids: list[tuple[str, float]] = []
    started = time.monotonic()
    frozen_at = thawed_at = None
    i = 0
    while time.monotonic() - started < RUN_S:
        now = time.monotonic() - started
        if frozen_at is None and now >= FREEZE_AFTER_S:
            os.kill(frozen.pid, signal.SIGSTOP)
            frozen_at = now
        if frozen_at is not None and thawed_at is None and now >= FREEZE_AFTER_S + FREEZE_S:
            os.kill(frozen.pid, signal.SIGCONT)
            thawed_at = now
        rid = f"r{receive_maximum}-{i}"
        _send(client, rid)
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
    emit_with_provenance(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
