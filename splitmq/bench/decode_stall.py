"""Decoding bombs against a live worker: how long a good request waits behind each one.

    python -m splitmq.bench.decode_stall [--json out.json] [--candidates 1500]

A real Mosquitto on a free port with the shipped config (broker/mosquitto.conf: the site's
frame limit, `FrameLimits.max_frame_bytes`, as its message_size_limit, max_packet_size 8 times
that) and an echo worker in its own process whose split 0 is a 224x224 RGB image (the echo
runner decodes and validates every frame, then answers a fixed top-5, so the delay measured is
decoding's, not a model's). Per round one plain MQTT client (the bomber) sends the hostile
frame(s) and right behind them one good 224x224 lossless WebP frame, and a second client (a
bystander) sends one good frame at the same moment; both wait for their answers.
`good_delay_ms` = a good request's round trip minus the median round trip of good requests its
client sent alone (the baseline, measured in the same run), for each sender.

Cases: 16 MiB JPEGs of ~4.2 million empty COM or APP1 segments before a valid image, and 16 MiB
of zeros (over the frame limit: the broker reads and refuses them, PUBACK 0x95, and the bomber
keeps its connection); the same segment bombs at
the frame limit (they reach the worker, which refuses them); a frame just over the limit (the
broker refuses it: PUBACK 0x95); each of the 10 slowest-decoding frames a seeded fuzz of JPEG and
WebP bodies finds (timed here, through the same decoder the worker runs); and those 10 sent at
once ("fuzz_mix"). Each runs against a worker that answers one request per batch and one that
batches 8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.launcher import MosquittoBroker
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import EchoTailRunner, echo_model_info
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from mqtt_session.errors import BrokerConnectError
from mqtt_session.session import Ack, MqttSession
from schemas.codecs import EncodedTensor, decode_tensor, encode_tensor
from schemas.errors import FrameError
from schemas.frame import PREAMBLE, FrameLimits, encode_frame
from schemas.messages import ResultMessage, parse_result
from schemas.topics import Topics
from splitmq.bench.report import emit_with_provenance

TOPICS = Topics()
MODEL = echo_model_info("echo", shapes=((224, 224, 3), (64,)))
DEVICE = "bomber"
BYSTANDER = "bystander"
BOMB_BYTES = 16 * 1024 * 1024
LIMIT_BYTES = FrameLimits().max_frame_bytes  # the broker's message_size_limit too
HEADER_ROOM = 4096  # a hostile body leaves this much of its size to the frame's header
# How long a round waits for its good requests, and then for replies to the hostile frames
# (those the broker refuses get none).
GOOD_WAIT_S = 15.0
BOMBER_GOOD_WAIT_S = 3.0  # behind a bomb over max_packet_size it never comes (see run_case)
HOSTILE_WAIT_S = 0.3
BASELINE_REQUESTS = 30
REPEATS = 3
SEED = 20261205
# (max_batch, max_wait_ms); None = the worker's default for its device (cpu: 8, 0 ms).
WORKERS: dict[str, tuple[int | None, float | None]] = {
    "default": (None, None),
    "max_batch_1": (1, 0.0),
    "batching_8_wait_5ms": (8, 5.0),
}


def photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, 224, dtype=np.float32)
    base = ramp[:, None, None] + ramp[None, :, None] * np.array([0.2, 0.5, 0.8])
    return np.clip(base + rng.normal(0, 8, (224, 224, 3)), 0, 255).astype(np.uint8)


# -- hostile bodies ------------------------------------------------------------------------------


def segment_bomb(jpeg: bytes, segment: bytes, frame_bytes: int = BOMB_BYTES) -> bytes:
    """Empty segments spliced after the SOI until the body is `frame_bytes` less a header's
    room."""
    count = (frame_bytes - HEADER_ROOM - len(jpeg)) // len(segment)
    return jpeg[:2] + segment * count + jpeg[2:]


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    kind = rng.randrange(6)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # a region repeated many times
        start = rng.randrange(len(data))
        piece = bytes(data[start : start + rng.randint(1, 64)])
        data[start:start] = piece * rng.randint(2, 20_000)
    elif kind == 2:  # marker bytes sprinkled in
        for _ in range(rng.randint(1, 32)):
            data.insert(rng.randrange(2, len(data)), 0xFF)
    elif kind == 3:  # truncation
        del data[rng.randrange(2, len(data)) :]
    elif kind == 4:  # a run of one byte value
        start = rng.randrange(len(data))
        data[start : start + rng.randint(1, 4096)] = bytes([rng.randrange(256)]) * 64
    else:  # random 16-bit field overwritten (lengths, sizes, table entries)
        at = rng.randrange(len(data) - 1)
        data[at : at + 2] = rng.getrandbits(16).to_bytes(2, "big")
    return bytes(data)


@dataclass(frozen=True)
class Found:
    codec: str
    body: bytes
    decode_ms: float
    answer: str


def slowest_mutations(bodies: dict[str, bytes], candidates: int, keep: int = 10) -> list[Found]:
    """The `keep` slowest of `candidates` seeded mutations, timed through the worker's decoder."""
    rng = random.Random(SEED)
    found: list[Found] = []
    for _ in range(candidates):
        codec = rng.choice(sorted(bodies))
        body = _mutate(rng, bodies[codec])
        quant = {"quality": 90} if codec == "jpeg" else None
        encoded = EncodedTensor(codec, "uint8", (224, 224, 3), quant, b"", body, "none", len(body))
        started = time.perf_counter()
        try:
            decode_tensor(encoded)
            answer = "ok"
        except FrameError as exc:
            answer = exc.code
        found.append(Found(codec, body, (time.perf_counter() - started) * 1000.0, answer))
    found.sort(key=lambda item: item.decode_ms, reverse=True)
    return found[:keep]


def frame_with_body(codec: str, body: bytes, request_id: str) -> bytes:
    """A frame whose image body is `body`, with a header that declares it honestly."""
    frame = encode_frame(
        photo(),
        codec=codec,
        request_id=request_id,
        model=MODEL.name,
        fingerprint=MODEL.fingerprint,
        split=0,
    )
    _, _, _, _, header_len, _, _ = PREAMBLE.unpack_from(frame)
    header = json.loads(frame[PREAMBLE.size : PREAMBLE.size + header_len])
    header["raw_bytes"] = len(body)
    blob = json.dumps(header, separators=(",", ":")).encode()
    return PREAMBLE.pack(b"SMQF", 1, 0, 0, len(blob), 0, len(body)) + blob + body


# -- the worker, in its own process ---------------------------------------------------------


def serve(port: int, max_batch: int | None, max_wait_ms: float | None) -> None:
    """The worker process: an echo runner whose split 0 is a 224x224 image."""
    config = WorkerConfig(
        broker=BrokerSettings(host="127.0.0.1", port=port),
        worker_id="stall-worker",
        models=[ModelEntry(name=MODEL.name)],
        runner="echo",
        device="cpu",
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )
    with EdgeWorker(config, runner=EchoTailRunner([MODEL])) as worker:
        sys.stdin.read()  # until the benchmark closes our stdin
        worker.stop()


@contextmanager
def worker_process(
    port: int, max_batch: int | None, max_wait_ms: float | None
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable,
        "-m",
        "splitmq.bench.decode_stall",
        "--serve",
        str(port),
        str(max_batch),
    ]
    process = subprocess.Popen([*command, str(max_wait_ms)], stdin=subprocess.PIPE)
    try:
        yield process
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# -- the client ------------------------------------------------------------------------------


@dataclass
class Client:
    settings: BrokerSettings
    device: str = DEVICE
    sent: dict[str, float] = field(default_factory=dict)
    replies: dict[str, tuple[ResultMessage, float]] = field(default_factory=dict)
    acks: dict[str, Future[Ack]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self.session = MqttSession(self.settings, client_id=self.device)
        self.session.route(TOPICS.results_for(self.device), self._on_result)
        self.session.start(wait_s=10)

    def _on_result(self, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        rid = bytes(getattr(message.properties, "CorrelationData", b"") or b"").decode()
        with self._changed:
            self.replies[rid] = (parse_result(message.payload), now)
            self._changed.notify_all()

    def send(self, rid: str, frame: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = TOPICS.result_inbox(self.device)
        props.CorrelationData = rid.encode()
        props.MessageExpiryInterval = 120
        self.sent[rid] = time.perf_counter()
        topic = TOPICS.request(MODEL.name, 0, self.device)
        with contextlib.suppress(BrokerConnectError):  # answered "not sent"
            self.acks[rid] = self.session.publish_acked(topic, frame, properties=props)

    def wait(self, rids: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not all(rid in self.replies for rid in rids):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def rtt_ms(self, rid: str) -> float | None:
        if rid not in self.replies:
            return None
        return (self.replies[rid][1] - self.sent[rid]) * 1000.0

    def server_ms(self, rid: str) -> dict[str, float] | None:
        """The worker's own queue and decode times for a request it answered ok."""
        timings = self.replies[rid][0].timings if rid in self.replies else None
        if timings is None:
            return None
        return {"queue": round(timings.queue_ms, 2), "decode": round(timings.decode_ms, 2)}

    def answer(self, rid: str) -> str:
        """The worker's answer; else what the broker did with the publish."""
        if rid in self.replies:
            result = self.replies[rid][0]
            return result.error.code if result.error is not None else result.status
        acked = self.acks.get(rid)
        if acked is None:
            return "not sent"
        if not acked.done():
            return "no reply, no puback"
        if acked.exception() is not None:
            return "sender disconnected"
        code = acked.result().reason_code
        return f"broker refused {code:#x}" if code >= 0x80 else "no reply"


def good_frame(rid: str) -> bytes:
    image = photo()
    return encode_frame(
        image,
        codec="webp",
        request_id=rid,
        model=MODEL.name,
        fingerprint=MODEL.fingerprint,
        split=0,
    )


def baseline_ms(client: Client, tag: str) -> float:
    rtts = []
    for i in range(BASELINE_REQUESTS):
        rid = f"{tag}-base-{i}"
        client.send(rid, good_frame(rid))
        if client.wait([rid], 30):
            rtts.append(client.rtt_ms(rid) or 0.0)
        time.sleep(0.02)
    return statistics.median(rtts)


def run_case(
    settings: BrokerSettings, bystander: Client, tag: str, bodies: list[tuple[str, bytes]]
) -> dict[str, Any]:
    """Each round's bomber is a fresh connection, so that no round inherits another's state (a
    connection the broker had dropped for a packet over max_packet_size would resend it on every
    reconnect: paho keeps an unacknowledged QoS 1 message)."""
    rounds = []
    for repeat in range(REPEATS):
        hostile = [f"{tag}-{repeat}-bomb-{i}" for i in range(len(bodies))]
        frames = [
            frame_with_body(codec, body, rid)
            for rid, (codec, body) in zip(hostile, bodies, strict=True)
        ]
        same, other = f"{tag}-{repeat}-good", f"{tag}-{repeat}-good-other"
        same_bytes, other_bytes = good_frame(same), good_frame(other)
        bomber = Client(settings)
        try:
            for rid, frame in zip(hostile, frames, strict=True):
                bomber.send(rid, frame)
            bomber.send(same, same_bytes)
            bystander.send(other, other_bytes)
            bystander.wait([other], GOOD_WAIT_S)
            bomber.wait([same], BOMBER_GOOD_WAIT_S)
            bomber.wait(hostile, HOSTILE_WAIT_S)
            rounds.append(
                {
                    "good_rtt_ms": bomber.rtt_ms(same),
                    "good_answer": bomber.answer(same),
                    "good_server_ms": bomber.server_ms(same),
                    "other_rtt_ms": bystander.rtt_ms(other),
                    "other_answer": bystander.answer(other),
                    "hostile_answers": sorted({bomber.answer(rid) for rid in hostile}),
                    "hostile_reply_ms_max": max((bomber.rtt_ms(rid) or -1.0) for rid in hostile),
                }
            )
        finally:
            bomber.session.stop(timeout_s=0.5)
        time.sleep(0.2)
    return {"rounds": rounds}


def run_worker(
    broker: MosquittoBroker, name: str, cases: dict[str, list[tuple[str, bytes]]]
) -> dict[str, Any]:
    max_batch, max_wait_ms = WORKERS[name]
    settings = BrokerSettings(host=broker.host, port=broker.port)
    with worker_process(broker.port, max_batch, max_wait_ms) as process:
        bomber = Client(settings)
        bystander = Client(settings, device=BYSTANDER)
        try:
            _wait_serving(bomber, name)
            base = baseline_ms(bomber, name)
            base_other = baseline_ms(bystander, f"{name}-other")
            bomber.session.stop()  # each round sends from a fresh one (run_case)
            results = {
                case: run_case(settings, bystander, f"{name}-{case}", b)
                for case, b in cases.items()
            }
        finally:
            bomber.session.stop()
            bystander.session.stop()
        alive = process.poll() is None
    return _summarise(name, (base, base_other), results, alive)


def _wait_serving(client: Client, tag: str) -> None:
    for attempt in range(60):
        rid = f"{tag}-ready-{attempt}"
        client.send(rid, good_frame(rid))
        if client.wait([rid], 1.0):
            return
    raise RuntimeError("the worker did not answer within 60 s")


def _delays(rounds: list[dict[str, Any]], prefix: str, base: float) -> tuple[list[float], int]:
    """A sender's good-request delays over the baseline, and how many got no ok answer."""
    delays, lost = [], 0
    for one in rounds:
        if one[f"{prefix}_answer"] != "ok":
            lost += 1
            continue
        delays.append(one[f"{prefix}_rtt_ms"] - base)
    return delays, lost


def _summarise(
    name: str, bases: tuple[float, float], results: dict[str, dict[str, Any]], alive: bool
) -> dict[str, Any]:
    cases = {}
    lost = lost_other = 0
    worst = worst_other = worst_in_worker = 0.0
    for case, result in results.items():
        rounds = result["rounds"]
        delays, case_lost = _delays(rounds, "good", bases[0])
        others, case_lost_other = _delays(rounds, "other", bases[1])
        lost, lost_other = lost + case_lost, lost_other + case_lost_other
        worst, worst_other = max([worst, *delays]), max([worst_other, *others])
        in_worker = [t["queue"] + t["decode"] for o in rounds if (t := o["good_server_ms"])]
        worst_in_worker = max([worst_in_worker, *in_worker])
        cases[case] = {
            "good_delay_ms": [round(d, 1) for d in delays],
            "good_answers": sorted({one["good_answer"] for one in rounds}),
            "other_client_delay_ms": [round(d, 1) for d in others],
            "other_client_answers": sorted({one["other_answer"] for one in rounds}),
            "good_server_ms": [one["good_server_ms"] for one in rounds],
            "hostile_answers": sorted({a for one in rounds for a in one["hostile_answers"]}),
            "hostile_reply_ms_max": round(max(o["hostile_reply_ms_max"] for o in rounds), 1),
        }
    return {
        "worker": name,
        "baseline_good_rtt_ms": round(bases[0], 2),
        "baseline_other_client_rtt_ms": round(bases[1], 2),
        "cases": cases,
        "good_lost": lost,
        "worst_good_delay_ms": round(worst, 1),
        "other_client_lost": lost_other,
        "worst_other_client_delay_ms": round(worst_other, 1),
        "worst_good_in_worker_ms": round(worst_in_worker, 1),
        "worker_alive_at_end": alive,
    }


def build_cases(candidates: int) -> tuple[dict[str, list[tuple[str, bytes]]], list[dict[str, Any]]]:
    image = photo()
    jpeg = bytes(encode_tensor(image, "jpeg").payload)
    webp = bytes(encode_tensor(image, "webp").payload)
    slow = slowest_mutations({"jpeg": jpeg, "webp": webp}, candidates)
    cases: dict[str, list[tuple[str, bytes]]] = {
        # The same 16 MiB refused at its first byte: what moving 16 MiB costs, without a walk.
        "control_16mib_no_soi": [("jpeg", bytes(BOMB_BYTES - 4096))],
        "com_16mib": [("jpeg", segment_bomb(jpeg, b"\xff\xfe\x00\x02"))],
        "app1_16mib": [("jpeg", segment_bomb(jpeg, b"\xff\xe1\x00\x02"))],
        # At the frame limit the broker passes them on: the worker's refusal is what is timed.
        "com_at_limit": [("jpeg", segment_bomb(jpeg, b"\xff\xfe\x00\x02", LIMIT_BYTES))],
        "app1_at_limit": [("jpeg", segment_bomb(jpeg, b"\xff\xe1\x00\x02", LIMIT_BYTES))],
        # Just over it: the broker reads it and refuses it (PUBACK 0x95).
        "over_limit_no_soi": [("jpeg", bytes(LIMIT_BYTES + 1))],
    }
    for i, item in enumerate(slow):
        cases[f"fuzz_{i}"] = [(item.codec, item.body)]
    cases["fuzz_mix"] = [(item.codec, item.body) for item in slow]
    found = [
        {
            "codec": s.codec,
            "bytes": len(s.body),
            "decode_ms": round(s.decode_ms, 2),
            "answer": s.answer,
        }
        for s in slow
    ]
    return cases, found


def gil_held_fraction(codec: str, body: bytes, seconds: float = 1.0) -> dict[str, float]:
    """How much of a decode thread's time holds the GIL: a pure-Python spinner's pace while the
    decode thread works, against its pace alone (1 - ratio; 0 = the decode never blocks it)."""
    quant = {"quality": 90} if codec == "jpeg" else None
    encoded = EncodedTensor(codec, "uint8", (224, 224, 3), quant, b"", body, "none", len(body))

    def spin(until: float) -> int:
        count = 0
        while time.perf_counter() < until:
            count += 1
        return count

    alone = spin(time.perf_counter() + seconds)
    stop = threading.Event()
    decoded = [0]

    def decode_loop() -> None:
        while not stop.is_set():
            decode_tensor(encoded)
            decoded[0] += 1

    thread = threading.Thread(target=decode_loop)
    thread.start()
    shared = spin(time.perf_counter() + seconds)
    stop.set()
    thread.join()
    return {
        "gil_held_fraction": round(1.0 - shared / alone, 3),
        "decodes_per_s": round(decoded[0] / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--candidates", type=int, default=1500, help="fuzzed bodies timed")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        batch, wait_ms = args.serve[1], args.serve[2]
        serve(
            int(args.serve[0]),
            None if batch == "None" else int(batch),
            None if wait_ms == "None" else float(wait_ms),
        )
        return 0
    cases, found = build_cases(args.candidates)
    image = photo()
    gil = {
        codec: gil_held_fraction(codec, bytes(encode_tensor(image, codec).payload))
        for codec in ("jpeg", "webp")
    }
    with MosquittoBroker() as broker:
        workers = [run_worker(broker, name, cases) for name in WORKERS]
    report = {
        "bench": "decode_stall",
        "fuzz_candidates": args.candidates,
        "slowest_fuzzed": found,
        "decode_thread_gil": gil,
        "workers": workers,
        "worker_configs": {name: list(value) for name, value in WORKERS.items()},
        "frame_limit_bytes": LIMIT_BYTES,
        "target": "good request behind each bomb delayed <= 100 ms, 0 lost",
        # A good request of another client: the case the broker's limit is for.
        "met_other_client": all(
            w["worst_other_client_delay_ms"] <= 100 and w["other_client_lost"] == 0 for w in workers
        ),
        # The bomber's own good request: behind its own upload of the bomb.
        "met_same_client": all(
            w["worst_good_delay_ms"] <= 100 and w["good_lost"] == 0 for w in workers
        ),
        # The good request's own queue + decode time in the worker: what decoding costs it,
        # without the time the hostile frame's bytes take to reach the worker.
        "met_in_worker": all(w["worst_good_in_worker_ms"] <= 100 for w in workers),
    }
    emit_with_provenance(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
