"""10,000 malformed frames, interleaved with good requests, against a real echo worker process.

Each malformed frame is a random mutation of a valid one: truncation, bit flips, header JSON
edits, huge numbers, wrong shapes, bad codecs, oversized frames, broken preambles, garbage,
every poison class of tests/support/poison.py, and JPEG/WebP bodies at split 0 that are
corrupted, bloated with empty segments or chunks, or lie about their size. The echo runner
still decodes and validates every frame; the same decoder in this process is the oracle of
what each answer must be:
- every request gets exactly one reply (all name a valid ResponseTopic);
- a frame the oracle refuses is answered "error" with the oracle's code;
- a frame that survived its mutation is answered like a good one ("ok");
- every good request is answered "ok" with the echo top-5;
- the worker process is the same one at the end (no restart) and logged no traceback.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_node.link import DeviceLink
from edge_worker.config import WorkerConfig, worker_config_from_mapping
from edge_worker.errors import RequestError
from edge_worker.runner import ECHO_TOP5, EchoTailRunner, echo_model_info
from mqtt_session.client import BrokerSettings
from mqtt_session.session import MqttSession
from schemas.errors import SchemaError
from schemas.frame import PREAMBLE_SIZE, FrameLimits, encode_frame
from schemas.messages import ResultMessage, parse_result
from schemas.topics import Topics
from splitmq.worker_process import worker_popen
from tests.support.frames import build_frame, split_frame
from tests.support.image_bombs import (
    APP1,
    COM,
    jpeg_claiming,
    photo,
    riff,
    segment_bomb,
    webp_chunks,
    webp_claiming,
)
from tests.support.poison import POISON, good_frame

pytestmark = pytest.mark.integration

TOPICS = Topics()
ECHO = echo_model_info()
DEVICE = "fuzzer"
BAD_FRAMES = 10_000
GOOD_EVERY = 4  # one good request after every 4 malformed ones
WINDOW = 256  # requests in flight at once (the broker holds what the worker has not taken)
MAX_FRAME_BYTES = 64 * 1024  # small, so that oversized frames stay cheap to send
SEED = 20261203

HUGE = "1" + "0" * 400
WEIRD_VALUES: list[str] = [
    "null", "-1", "0", "1.5", "true", "[]", "{}", '""', '"x"', HUGE, "-" + HUGE, "1e999",
    "9007199254740993", "[1, 2, 3]", '"\\ud800"', '"' + "y" * 300 + '"', "[-1]", "[0, 0]",
    '{"a": 1}', "[" + HUGE + "]", '"lossless"', '"int8"', '"float64"',
]  # fmt: skip
FIELDS = [
    "request_id", "model", "fingerprint", "split", "codec", "dtype", "shape", "compression",
    "quant", "raw_bytes", "device_id", "timestamps", "deadline_ms",
]  # fmt: skip


# -- mutations (each returns frame bytes and the (model, split) topic to send them on) ---------


def _base(rng: random.Random, rid: str) -> tuple[bytes, int]:
    split = rng.choice((0, 1))
    return good_frame(rid, split=split), split


def truncate(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    return frame[: rng.randrange(len(frame))], split


def bit_flips(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    data = bytearray(frame)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data), split


def header_edit(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    header, params, payload = split_frame(frame)
    choice = rng.random()
    if choice < 0.15:
        header.pop(rng.choice(FIELDS))
        text = json.dumps(header)
    elif choice < 0.25:
        header["unexpected"] = 1
        text = json.dumps(header)
    elif choice < 0.35:  # broken JSON
        text = json.dumps(header)
        cut = rng.randrange(len(text))
        text = text[:cut] + rng.choice(("", "}", '"', ",", "\\", "\x00")) + text[cut + 1 :]
    else:
        key = rng.choice(FIELDS)
        header[key] = "@@"
        text = json.dumps(header).replace('"@@"', rng.choice(WEIRD_VALUES))
    return build_frame(text, params, payload), split


def huge_number(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    header, params, payload = split_frame(frame)
    key = rng.choice(("split", "raw_bytes", "deadline_ms", "shape", "timestamps"))
    digits = "9" * rng.choice((20, 400, 4300))
    literal = {"shape": f"[{digits}]", "timestamps": f'{{"sent": {digits}}}'}.get(key, digits)
    header[key] = "@@"
    return build_frame(json.dumps(header).replace('"@@"', literal), params, payload), split


def wrong_shape(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    header, params, payload = split_frame(frame)
    header["shape"] = [rng.randint(0, 70) for _ in range(rng.randint(0, 4))]
    return build_frame(json.dumps(header), params, payload), split


def bad_codec(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    header, params, payload = split_frame(frame)
    header[rng.choice(("codec", "compression", "dtype"))] = rng.choice(
        ("zip", "", "LOSSLESS", "int3", "jpeg", "webp", "fp16", "int4", "float16", "bool", "none")
    )
    return build_frame(json.dumps(header), params, payload), split


def oversized(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    return frame + bytes(MAX_FRAME_BYTES + rng.randrange(1, 4096) - len(frame)), split


def bad_preamble(rng: random.Random, rid: str) -> tuple[bytes, int]:
    frame, split = _base(rng, rid)
    data = bytearray(frame)
    offset = rng.randrange(PREAMBLE_SIZE - 3)
    struct.pack_into("<I", data, offset, rng.getrandbits(32))
    return bytes(data), split


def garbage(rng: random.Random, rid: str) -> tuple[bytes, int]:
    return rng.randbytes(rng.randrange(0, 600)), rng.choice((0, 1))


def image_body(rng: random.Random, rid: str) -> tuple[bytes, int]:
    """A JPEG or WebP frame at split 0 whose body is corrupted, bloated or lies about its size."""
    codec = rng.choice(("jpeg", "webp"))
    image = photo(ECHO.split_shapes[0][0], seed=rng.randrange(1000))
    frame = encode_frame(
        image, codec=codec, request_id=rid, model=ECHO.name, fingerprint=ECHO.fingerprint, split=0
    )
    header, params, body = split_frame(frame)
    choice = rng.randrange(5)
    if choice == 0:
        data = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        body = bytes(data)
    elif choice == 1 and codec == "jpeg":  # a small segment bomb (the frame stays under 64 KiB)
        body = segment_bomb(body, rng.choice((COM, APP1)), total=rng.randrange(1_000, 60_000))
    elif choice == 1:
        body = riff([*webp_chunks(body), *[(b"EXIF", b"x")] * rng.randint(1, 12)])
    elif choice == 2:
        top = 65535 if codec == "jpeg" else 16384
        claim = jpeg_claiming if codec == "jpeg" else webp_claiming
        body = claim(body, rng.randint(1, top), rng.randint(1, top))
    elif choice == 3:
        body = body[: rng.randrange(len(body))]
    else:
        at = rng.randrange(len(body))
        body = body[:at] + rng.randbytes(rng.randint(1, 64)) + body[at:]
    header["raw_bytes"] = len(body)
    return build_frame(json.dumps(header), params, body), 0


def poison(rng: random.Random, rid: str) -> tuple[bytes, int]:
    build, _ = POISON[rng.choice(sorted(POISON))]
    return build(rid), 1


MUTATIONS: dict[str, tuple[Callable[[random.Random, str], tuple[bytes, int]], float]] = {
    "truncate": (truncate, 2.0),
    "bit_flips": (bit_flips, 2.0),
    "header_edit": (header_edit, 3.0),
    "huge_number": (huge_number, 1.0),
    "wrong_shape": (wrong_shape, 1.0),
    "bad_codec": (bad_codec, 1.0),
    "oversized": (oversized, 0.3),
    "bad_preamble": (bad_preamble, 1.0),
    "garbage": (garbage, 0.5),
    "poison": (poison, 1.0),
    "image_body": (image_body, 1.5),
}


# -- the device side -----------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str  # "good" or a mutation name
    expected: str  # "ok" or the oracle's error code
    may_expire: bool = False  # a valid frame whose (edited) deadline_ms may pass in the queue
    sent_at: float = 0.0


@dataclass
class Fuzzer:
    settings: BrokerSettings
    sent: dict[bytes, Sent] = field(default_factory=dict)
    replies: dict[bytes, tuple[ResultMessage, float]] = field(default_factory=dict)
    duplicates: int = 0
    unmatched: int = 0

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self.session = MqttSession(self.settings, client_id=DEVICE)
        self.session.route(TOPICS.results_for(DEVICE), self._on_result)
        self.session.start(wait_s=10)

    def _on_result(self, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        result = parse_result(message.payload)
        correlation = bytes(getattr(message.properties, "CorrelationData", b"") or b"")
        with self._changed:
            if correlation not in self.sent:
                self.unmatched += 1
            elif correlation in self.replies:
                self.duplicates += 1
            else:
                self.replies[correlation] = (result, now)
            self._changed.notify_all()

    def send(self, correlation: bytes, split: int, frame: bytes, record: Sent) -> None:
        with self._changed:
            # Flow control: at most WINDOW unanswered requests.
            while len(self.sent) - len(self.replies) >= WINDOW:
                assert self._changed.wait(30), "the worker stopped answering"
            record.sent_at = time.perf_counter()
            self.sent[correlation] = record
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = TOPICS.result_inbox(DEVICE)
        props.CorrelationData = correlation
        props.MessageExpiryInterval = 120
        self.session.publish(TOPICS.request(ECHO.name, split, DEVICE), frame, properties=props)

    def wait_all(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.replies) < len(self.sent):
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.sent) - len(self.replies)} requests without a reply"
                self._changed.wait(left)

    def close(self) -> None:
        self.session.stop()


def oracle(runner: EchoTailRunner, kind: str, frame: bytes, split: int) -> Sent:
    """What the worker must answer: "ok" (or "expired", with a deadline), or the code of the
    decoder's refusal."""
    try:
        decoded = runner.decode(frame, ECHO.name, split)
    except (SchemaError, RequestError) as exc:
        return Sent(kind, str(exc.code))
    return Sent(kind, "ok", may_expire=decoded.header.deadline_ms is not None)


def fuzz_worker(settings: BrokerSettings) -> WorkerConfig:
    return worker_config_from_mapping(
        {
            "broker": {"host": settings.host, "port": settings.port},
            "worker_id": "fuzzed",
            "runner": "echo",
            "models": [{"name": ECHO.name}],
            "device": "cpu",
            "max_batch": 8,
            "queue_capacity": 128,
            "frame_limits": {"max_frame_bytes": MAX_FRAME_BYTES},
            "homeassistant": {"enabled": False},
        }
    )


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path  # its stderr


@pytest.fixture
def worker(broker_settings: BrokerSettings, tmp_path: Path) -> Iterator[WorkerProcess]:
    log = tmp_path / "worker.log"
    with (
        log.open("wb") as stderr,
        worker_popen(fuzz_worker(broker_settings), stderr=stderr, quiet=True) as process,
    ):
        yield WorkerProcess(process, log)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_ten_thousand_malformed_frames_get_their_codes_and_good_requests_are_served(
    broker_settings: BrokerSettings, worker: WorkerProcess
) -> None:
    rng = random.Random(SEED)
    limits = FrameLimits(max_frame_bytes=MAX_FRAME_BYTES)
    runner = EchoTailRunner([ECHO], limits=limits)
    names = list(MUTATIONS)
    weights = [MUTATIONS[name][1] for name in names]
    fuzzer = Fuzzer(broker_settings)
    try:
        observer = DeviceLink(broker_settings, "fuzz-observer").start(wait_s=10)
        try:
            assert observer.wait_for_worker(ECHO.name, 1, 60), "the worker process did not serve"
        finally:
            observer.stop()
        fuzzer.send(b"warm-up", 1, good_frame("warm-up"), Sent("warm-up", "ok"))
        fuzzer.wait_all(60)
        started = time.perf_counter()
        for i in range(BAD_FRAMES):
            kind = rng.choices(names, weights)[0]
            rid = f"bad-{i}"
            frame, split = MUTATIONS[kind][0](rng, rid)
            fuzzer.send(rid.encode(), split, frame, oracle(runner, kind, frame, split))
            if i % GOOD_EVERY == GOOD_EVERY - 1:
                good, split = f"good-{i}", rng.choice((0, 1))
                fuzzer.send(good.encode(), split, good_frame(good, split=split), Sent("good", "ok"))
        fuzzer.wait_all(120)
        wall_s = time.perf_counter() - started
    finally:
        fuzzer.close()
    alive = worker.process.poll() is None
    rss_kib = peak_rss_kib(worker.process.pid) if alive else 0
    log = worker.log.read_text(errors="replace")

    wrong: list[str] = []
    codes: Counter[str] = Counter()
    good_ms: list[float] = []
    survived = 0
    for correlation, record in fuzzer.sent.items():
        result, received_at = fuzzer.replies[correlation]
        answer = result.error.code if result.error is not None else result.status
        if record.kind in ("good", "warm-up"):
            good_ms.append((received_at - record.sent_at) * 1000.0)
            if result.status != "ok" or tuple(result.top5) != ECHO_TOP5:
                wrong.append(f"{correlation!r} good -> {answer}")
            continue
        codes[answer] += 1
        survived += record.expected == "ok"
        if answer != record.expected and not (record.may_expire and answer == "expired"):
            wrong.append(f"{correlation!r} {record.kind}: expected {record.expected}, got {answer}")
    assert alive, "the worker process exited"
    assert "Traceback" not in log, log[-3000:]
    assert fuzzer.duplicates == 0 and fuzzer.unmatched == 0
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:10]}"
    assert codes["internal"] == 0
    good_ms.sort()
    print(
        f"fuzz: {BAD_FRAMES} malformed frames ({survived} still valid after mutation) and "
        f"{len(good_ms)} good requests in {wall_s:.1f} s; {len(good_ms)} good answered ok; "
        f"codes {dict(codes.most_common())}; good round trip p50 "
        f"{good_ms[len(good_ms) // 2]:.1f} ms, p99 {good_ms[int(len(good_ms) * 0.99)]:.1f} ms, "
        f"max {good_ms[-1]:.1f} ms (window {WINDOW}); worker peak RSS {rss_kib / 1024:.0f} MiB; "
        "0 restarts, 0 duplicates"
    )
