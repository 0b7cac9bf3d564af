"""The device node end to end: a real Mosquitto, a real edge worker, the real model and photos.

Every test checks the runtime's promise: each request ends with exactly one result record,
offloaded when a worker can answer, computed on the device otherwise, and a late server reply
never becomes a second record.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.launcher import MosquittoBroker
from device_node import cli as device_cli
from device_node.config import DeviceConfig, FixedPolicyConfig
from device_node.node import DeviceNode, top_predictions
from device_node.records import Fallback, PredictionRecord, ResultRecord
from device_node.runtime import build_device
from device_node.sources import CyclingSource, SourceImage, sample_source_images
from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.runner import ModelTailRunner
from edge_worker.worker import EdgeWorker
from mqtt_session.client import BrokerSettings
from schemas.codecs import decode_tensor, encode_tensor
from schemas.frame import Frame
from schemas.messages import Prediction, ResultMessage, StatusMessage
from splitmq.worker_process import worker_popen
from splitting.partition import SplitModel
from splitting.policy import FixedSplit
from splitting.registry import load_model
from splitting.torch_blocks import TorchBlocks
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

MODEL = "efficientnet-lite0"
MID_SPLIT = 5  # an inner split whose tensor is far from the input and the logits


@pytest.fixture(scope="module")
def model() -> SplitModel:
    return load_model(MODEL)


@pytest.fixture(scope="module")
def photos() -> list[SourceImage]:
    return sample_source_images()


def worker_config(settings: BrokerSettings, worker_id: str = "edge-1") -> WorkerConfig:
    # max_batch 1: every tail runs alone, so its logits are bit-identical to the unsplit model's.
    return WorkerConfig(
        broker=settings,
        worker_id=worker_id,
        models=[ModelEntry(name=MODEL, splits=[0, MID_SPLIT, 13])],
        device="cpu",
        max_batch=1,
        max_wait_ms=0.0,
    )


@pytest.fixture
def worker(broker_settings: BrokerSettings) -> Iterator[EdgeWorker]:
    with EdgeWorker(worker_config(broker_settings)) as running:
        yield running


def make_device(
    settings: BrokerSettings,
    model: SplitModel,
    *,
    split: int = MID_SPLIT,
    codec: str = "int8",
    deadline_ms: float = 20000.0,
    device_id: str = "dev1",
    telemetry_stale_s: float | None = None,
    input_codec: str = "webp",
) -> DeviceNode:
    config = DeviceConfig(
        broker=settings,
        device_id=device_id,
        model=MODEL,
        codec=codec,
        input_codec=input_codec,
        policy=FixedPolicyConfig(split=split),
        deadline_ms=deadline_ms,
        telemetry_stale_s=telemetry_stale_s,
    )
    return build_device(config, model=TorchBlocks(model))


def wait_for_worker(node: DeviceNode, split: int = MID_SPLIT) -> None:
    wait_until(lambda: node.link.alive_workers(MODEL, split), what=f"a worker for split {split}")


def unsplit_top5(model: SplitModel, image: SourceImage) -> tuple[PredictionRecord, ...]:
    x = model.preprocess(model.prepare_image(image.pixels))
    return top_predictions(TorchBlocks(model), model.forward(x).numpy())


def assert_one_record_each(records: list[ResultRecord], count: int) -> None:
    assert len(records) == count
    assert len({r.request_id for r in records}) == count


def test_offloaded_lossless_top5_equals_the_unsplit_model(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    with make_device(broker_settings, model, codec="lossless") as node:
        wait_for_worker(node)
        records = [node.run_request(image) for image in photos[:3]]
    assert_one_record_each(records, 3)
    for record, image in zip(records, photos, strict=False):
        assert record.offloaded, record
        assert (record.split, record.fallback, record.worker_id) == (MID_SPLIT, None, "edge-1")
        assert record.bytes_sent > 0
        assert record.latency.compute_ms > 0
        # Indices and scores: the worker's softmax over bit-identical logits, through JSON.
        assert record.top5 == unsplit_top5(model, image)


def test_int8_offload_agrees_with_the_unsplit_model_on_top1(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    with make_device(broker_settings, model, split=13, codec="int8") as node:
        wait_for_worker(node, 13)
        records = [node.run_request(image) for image in photos[:4]]
    assert all(r.offloaded and r.split == 13 for r in records)
    agree = sum(
        r.top1.index == unsplit_top5(model, p)[0].index
        for r, p in zip(records, photos, strict=False)
    )
    assert agree >= 3  # int8 is lossy; the measured agreement is 99%+ (BENCHMARKS.md)


@pytest.mark.parametrize("input_codec", ["webp", "lossless"])
def test_split_zero_answers_exactly_what_the_unsplit_model_answers(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
    input_codec: str,
) -> None:
    with make_device(broker_settings, model, split=0, input_codec=input_codec) as node:
        wait_for_worker(node, 0)
        records = [node.run_request(image) for image in photos[:3]]
    for record, image in zip(records, photos, strict=False):
        assert record.offloaded and record.split == 0
        # The worker saw the very pixels: bit-identical logits, so the same scores.
        assert record.top5 == unsplit_top5(model, image)


def test_split_zero_sends_the_jpeg_when_asked_and_is_answered(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    with make_device(broker_settings, model, split=0, input_codec="jpeg") as node:
        wait_for_worker(node, 0)
        record = node.run_request(photos[0])
    assert record.offloaded and record.split == 0
    assert record.latency.head_ms == 0.0  # nothing runs on the device at split 0
    # The worker classified exactly the JPEG of the prepared image (quality 90).
    prepared = model.prepare_image(photos[0].pixels)
    decoded = decode_tensor(encode_tensor(prepared, "jpeg", jpeg_quality=90))
    logits = model.forward(model.preprocess(decoded)).numpy()
    assert record.top5 == top_predictions(TorchBlocks(model), logits)


def test_local_split_never_touches_the_broker(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    with make_device(broker_settings, model, split=model.n) as node:
        record = node.run_request(photos[1])
    assert not record.offloaded and record.fallback is None
    assert (record.split, record.bytes_sent) == (model.n, 0)
    assert record.top5 == unsplit_top5(model, photos[1])


def test_no_worker_runs_locally(
    broker_settings: BrokerSettings, model: SplitModel, photos: list[SourceImage]
) -> None:
    with make_device(broker_settings, model) as node:
        record = node.run_request(photos[0])
    assert (record.offloaded, record.fallback, record.split) == (False, Fallback.NO_WORKER, model.n)
    assert record.top5 == unsplit_top5(model, photos[0])


def test_clean_worker_stop_makes_the_device_run_locally(
    broker_settings: BrokerSettings, model: SplitModel, photos: list[SourceImage]
) -> None:
    worker = EdgeWorker(worker_config(broker_settings)).start()
    with make_device(broker_settings, model) as node:
        wait_for_worker(node)
        first = node.run_request(photos[0])
        worker.stop()  # "offline" status and cleared telemetry, retained
        wait_until(lambda: not node.link.alive_workers(MODEL, MID_SPLIT), what="worker gone")
        second = node.run_request(photos[1])
    assert first.offloaded
    assert (second.offloaded, second.fallback) == (False, Fallback.NO_WORKER)
    assert second.top5 == unsplit_top5(model, photos[1])


def lite0_worker(settings: BrokerSettings, worker_id: str) -> WorkerConfig:
    return WorkerConfig(
        broker=BrokerSettings(host=settings.host, port=settings.port),
        worker_id=worker_id,
        models=[ModelEntry(name=MODEL)],
        device="cpu",
        max_batch=1,
    )


def test_killed_worker_mid_run_falls_back_with_one_record_each(
    broker_settings: BrokerSettings, model: SplitModel, photos: list[SourceImage]
) -> None:
    records: list[ResultRecord] = []
    with worker_popen(lite0_worker(broker_settings, "edge-doomed"), quiet=False) as process:
        node = make_device(broker_settings, model, deadline_ms=10000, telemetry_stale_s=2.0)
        with node:
            wait_until(lambda: node.link.alive_workers(MODEL, MID_SPLIT), 60, "worker process")

            def kill_after_two(record: ResultRecord) -> None:
                records.append(record)
                if len(records) == 2:
                    process.send_signal(signal.SIGKILL)

            node.run(CyclingSource(photos), requests=6, rate_hz=4.0, on_record=kill_after_two)
            time.sleep(0.5)  # room for a late reply, which must not become a record
            late = node.link.counters.late_results
    assert_one_record_each(records, 6)
    assert all(r.offloaded for r in records[:2])
    after = records[2:]
    assert not any(r.offloaded for r in after)
    reasons = {r.fallback for r in after}
    assert reasons <= {Fallback.WORKER_LOST, Fallback.TIMEOUT, Fallback.NO_WORKER}, reasons
    for record, image in zip(records, CyclingSource(photos).images, strict=False):
        assert record.top5[0].index == unsplit_top5(model, image)[0].index
    assert late == 0


def test_deadline_fallback_drops_the_late_reply(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    # A deadline the worker cannot meet: the device computes the tail itself, and the worker's
    # answer (a result, or "expired") arrives for a request nobody waits for any more.
    with make_device(broker_settings, model, deadline_ms=0.001) as node:
        wait_for_worker(node)
        records = [node.run_request(image) for image in photos[:3]]
        wait_until(lambda: node.link.counters.late_results == 3, what="three late replies")
    assert_one_record_each(records, 3)
    for record, image in zip(records, photos, strict=False):
        assert (record.offloaded, record.fallback, record.split) == (
            False,
            Fallback.TIMEOUT,
            MID_SPLIT,
        )
        assert record.latency.local_tail_ms > 0
        assert record.top5[0].index == unsplit_top5(model, image)[0].index


def test_broker_restart_device_reconnects_and_offloads_again(
    broker: MosquittoBroker,
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    with make_device(broker_settings, model) as node:
        wait_for_worker(node)
        before = node.run_request(photos[0])
        broker.restart()
        wait_until(lambda: not node.link.connected, 10, "the device to notice the outage")
        during = node.run_request(photos[1])
        wait_until(lambda: node.link.connected, 30, "the device to reconnect")
        wait_for_worker(node)  # the worker republishes its telemetry after reconnecting
        after = [node.run_request(image) for image in photos[2:5]]
    assert before.offloaded
    assert (during.offloaded, during.fallback) == (False, Fallback.NOT_CONNECTED)
    assert all(r.offloaded for r in after)
    assert node.link.counters.connects >= 2


def test_two_devices_share_one_worker(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    nodes = [make_device(broker_settings, model, device_id=f"dev{i}") for i in (1, 2)]
    results: dict[str, list[ResultRecord]] = {}
    for node in nodes:
        node.start()
    try:
        for node in nodes:
            wait_for_worker(node)
        threads = [
            threading.Thread(
                target=lambda n=node, start=i: results.__setitem__(
                    n.config.device_id, n.run(CyclingSource(photos, start=start), requests=5)
                )
            )
            for i, node in enumerate(nodes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for node in nodes:
            node.stop()
    everything = results["dev1"] + results["dev2"]
    assert_one_record_each(everything, 10)
    assert all(r.offloaded for r in everything)
    assert {r.device_id for r in results["dev1"]} == {"dev1"}


def test_device_cli_runs_a_config_file(
    tmp_path: Path, broker_settings: BrokerSettings, worker: EdgeWorker
) -> None:
    config = tmp_path / "device.yaml"
    config.write_text(
        f"broker: {{host: {broker_settings.host}, port: {broker_settings.port}}}\n"
        "device_id: cli-device\npolicy: {kind: fixed, split: 13}\n"
    )
    jsonl = tmp_path / "records.jsonl"
    # No waiting for the worker here: the device learns the retained telemetry on start-up.
    code = device_cli.main(["--config", str(config), "--requests", "3", "--jsonl", str(jsonl)])
    assert code == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 3 and len({line["request_id"] for line in lines}) == 3
    assert all(line["offloaded"] and line["split"] == 13 for line in lines)


def test_device_cli_reports_a_bad_config_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "device.yaml"
    config.write_text("device_id: d\nsource: {kind: folder, paht: /tmp}\n")
    assert device_cli.main(["--config", str(config)]) == 2
    assert "source.paht: unknown key" in capsys.readouterr().err


class SlowTails(ModelTailRunner):
    """Real tails, each batch held back first: a server slower than the device."""

    delay_s = 2.0

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        time.sleep(self.delay_s)
        return super().run_batch(model, split, frames)


def racing_device(settings: BrokerSettings, model: SplitModel, *, slowdown: float) -> DeviceNode:
    config = DeviceConfig(
        broker=settings, device_id="racer", model=MODEL, codec="lossless", slowdown=slowdown
    )
    return build_device(config, model=TorchBlocks(model), policy=FixedSplit(MID_SPLIT, race=True))


def test_a_raced_request_ends_with_the_local_result_when_the_server_is_slow(
    broker_settings: BrokerSettings, model: SplitModel, photos: list[SourceImage]
) -> None:
    config = worker_config(broker_settings)
    slow_worker = EdgeWorker(config, runner=SlowTails.from_config(config))
    with slow_worker, racing_device(broker_settings, model, slowdown=1.0) as node:
        wait_for_worker(node)
        records = [node.run_request(image) for image in photos[:2]]
        # The losing server results still arrive, for requests nobody waits for.
        wait_until(lambda: node.link.counters.late_results == 2, what="two late replies")
    assert_one_record_each(records, 2)
    for record, image in zip(records, photos, strict=False):
        assert (record.offloaded, record.fallback) == (False, Fallback.RACE_WON_HERE)
        assert record.latency.local_tail_ms > 0
        assert record.total_ms < SlowTails.delay_s * 1000  # it did not wait for the server
        assert record.top5 == unsplit_top5(model, image)


def test_on_two_cores_a_lost_race_costs_no_encode(
    broker_settings: BrokerSettings, model: SplitModel, photos: list[SourceImage]
) -> None:
    """Split 0 raced against a slow server on a device 10x slower than this host: with two
    cores the local run starts at once and the image's encode overlaps it; with one core the
    encode comes first and the local run after it."""
    config = worker_config(broker_settings)
    slow_worker = EdgeWorker(config, runner=SlowTails.from_config(config))
    totals: dict[int, list[ResultRecord]] = {}
    with slow_worker:
        for cores in (2, 1):
            device = DeviceConfig(
                broker=broker_settings,
                device_id=f"racer{cores}",
                model=MODEL,
                slowdown=10.0,
                cores=cores,
            )
            policy = FixedSplit(0, race=True)
            with build_device(device, model=TorchBlocks(model), policy=policy) as node:
                wait_for_worker(node, split=0)
                totals[cores] = [node.run_request(image) for image in photos[:3]]
    for record in totals[2]:
        parts = record.latency
        assert record.fallback == Fallback.RACE_WON_HERE
        assert parts.encode_ms > 20  # a WebP encode, 10x stretched, ran for this request ...
        assert record.total_ms < parts.local_tail_ms + parts.encode_ms / 2  # ... beside the tail
    for record in totals[1]:
        parts = record.latency
        assert record.total_ms >= parts.local_tail_ms + parts.encode_ms  # one after the other


def test_a_raced_request_takes_the_server_result_when_it_comes_first(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    # A device 30x slower than this host: its tail loses to the worker's, which stops it.
    with racing_device(broker_settings, model, slowdown=30.0) as node:
        wait_for_worker(node)
        records = [node.run_request(image) for image in photos[:2]]
    assert_one_record_each(records, 2)
    for record, image in zip(records, photos, strict=False):
        assert (record.offloaded, record.fallback, record.worker_id) == (True, None, "edge-1")
        assert record.top5 == unsplit_top5(model, image)  # lossless: bit-identical logits


def _attacker(settings: BrokerSettings) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="attacker", protocol=mqtt.MQTTv5
    )
    client.connect(settings.host, settings.port)
    client.loop_start()
    return client


def test_a_forged_result_with_a_guessed_correlation_is_not_taken(
    broker_settings: BrokerSettings,
    worker: EdgeWorker,
    model: SplitModel,
    photos: list[SourceImage],
) -> None:
    """Anyone may publish to a device's result topic on an open broker: a reply whose
    CorrelationData is the (guessable) request id, with a made-up answer, is not recorded."""
    attacker = _attacker(broker_settings)
    try:
        with make_device(broker_settings, model, codec="lossless") as node:
            wait_for_worker(node)
            request_id = "dev1-guessed-1"
            forged = ResultMessage(
                request_id=request_id,
                status="ok",
                model=MODEL,
                split=MID_SPLIT,
                worker_id="edge-1",
                top5=[Prediction(index=1, label="goldfish", score=0.99)],
            )
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = request_id.encode()
            spam = threading.Event()

            def flood() -> None:
                while not spam.is_set():
                    topic = node.config.topics.result("dev1", "edge-1")
                    attacker.publish(topic, forged.model_dump_json(), qos=1, properties=props)
                    time.sleep(0.002)

            sender = threading.Thread(target=flood, daemon=True)
            sender.start()
            try:
                record = node.run_request(photos[0], request_id=request_id)
            finally:
                spam.set()
                sender.join()
    finally:
        attacker.loop_stop()
        attacker.disconnect()
    assert record.offloaded and record.top5 == unsplit_top5(model, photos[0])


def test_a_status_naming_another_worker_does_not_take_it_offline(
    broker_settings: BrokerSettings, worker: EdgeWorker, model: SplitModel
) -> None:
    attacker = _attacker(broker_settings)
    try:
        with make_device(broker_settings, model) as node:
            wait_for_worker(node)
            spoof = StatusMessage(node_id="edge-1", role="worker", state="offline", ts=time.time())
            topic = node.config.topics.status("impostor")
            attacker.publish(topic, spoof.model_dump_json(), qos=1).wait_for_publish(5)
            # A marker after the spoof: once it is seen, the spoof has been handled too.
            marker = StatusMessage(node_id="marker", role="worker", state="online", ts=time.time())
            marker_topic = node.config.topics.status("marker")
            attacker.publish(marker_topic, marker.model_dump_json(), qos=1).wait_for_publish(5)
            wait_until(lambda: "marker" in node.link.workers(), what="the marker")
            assert node.link.alive_workers(MODEL, MID_SPLIT)
    finally:
        attacker.loop_stop()
        attacker.disconnect()
