"""Edge worker parts without a broker: queue and batcher, statistics, telemetry, config, runners."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_worker.batching import Queued, RequestQueue
from edge_worker.cli import main as worker_main
from edge_worker.config import (
    ModelEntry,
    WorkerConfig,
    load_worker_config,
    with_overrides,
    worker_config_from_mapping,
)
from edge_worker.errors import (
    BadInputError,
    ConfigError,
    QueueFullError,
    QueueStateError,
    RunnerError,
    SplitNotServedError,
    WorkerStateError,
    WorkerStoppingError,
)
from edge_worker.runner import (
    EchoTailRunner,
    ModelTailRunner,
    candidate_splits,
    echo_model_info,
    resolve_splits,
)
from edge_worker.telemetry import EWMA_ALPHA, TelemetryReporter, WorkerStats
from schemas.frame import encode_frame
from schemas.messages import parse_telemetry
from splitting.images import sample_images
from splitting.partition import SplitModel
from splitting.registry import load_model

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "worker.example.yaml"


@dataclass(frozen=True)
class Item(Queued):
    name: str = ""


def item(name: str, key: tuple[str, int] = ("m", 1), *, age_s: float = 0.0, nbytes: int = 10):
    return Item(key=key, received=time.monotonic() - age_s, nbytes=nbytes, name=name)


# -- queue and batcher --------------------------------------------------------------------------


def test_batches_take_the_oldest_request_and_only_its_key() -> None:
    queue: RequestQueue[Item] = RequestQueue(capacity=8, max_bytes=1000)
    queue.put(item("b1", ("m", 2), age_s=0.2))
    queue.put(item("a1", ("m", 1), age_s=0.1))
    queue.put(item("b2", ("m", 2), age_s=0.05))
    queue.put(item("b3", ("m", 2)))
    taken: list[str] = []
    batch = queue.take_batch(2, 0.0, on_take=lambda i: taken.append(i.name))
    assert [i.name for i in batch] == ["b1", "b2"] == taken
    assert [i.name for i in queue.take_batch(8, 0.0)] == ["a1"]  # older than b3
    assert [i.name for i in queue.take_batch(8, 0.0)] == ["b3"]
    assert queue.take_batch(8, 0.0, timeout_s=0.01) == []


def test_batcher_waits_up_to_max_wait_for_more_of_the_same_key() -> None:
    queue: RequestQueue[Item] = RequestQueue(capacity=8, max_bytes=1000)
    queue.put(item("first"))
    later = threading.Timer(0.05, lambda: queue.put(item("second")))
    later.start()
    started = time.monotonic()
    batch = queue.take_batch(2, max_wait_s=1.0)
    later.join()
    assert time.monotonic() - started < 0.9  # a full batch does not wait out the window
    # The window (1 s from the first request's arrival) was still open when the second came.
    assert [i.name for i in batch] == ["first", "second"]


def test_no_waiting_without_a_window_or_for_an_old_request() -> None:
    queue: RequestQueue[Item] = RequestQueue(capacity=8, max_bytes=1000)
    queue.put(item("idle"))
    started = time.monotonic()
    assert len(queue.take_batch(4, max_wait_s=0.0)) == 1
    queue.put(item("old", age_s=2.0))
    assert len(queue.take_batch(4, max_wait_s=1.0)) == 1  # its window closed a second ago
    assert time.monotonic() - started < 0.5


def test_byte_limit_refuses_but_never_the_first_request() -> None:
    queue: RequestQueue[Item] = RequestQueue(capacity=2, max_bytes=100)
    queue.put(item("huge", nbytes=500))  # alone it is admitted: an empty queue takes anything
    with pytest.raises(QueueFullError, match="limit of 100 bytes"):
        queue.put(item("more", nbytes=1))
    queue.take_batch(1, 0.0)
    for i in range(3):  # past `capacity` (the ReceiveMaximum) but within the byte limit
        queue.put(item(f"x{i}", nbytes=30))
    assert len(queue) == 3 and queue.held_bytes == 90 and queue.peak == 3


def test_close_wakes_the_batcher_and_drain_returns_the_rest() -> None:
    queue: RequestQueue[Item] = RequestQueue(capacity=4, max_bytes=1000)
    result: list[list[Item]] = []
    waiter = threading.Thread(target=lambda: result.append(queue.take_batch(4, 0.0)))
    waiter.start()
    time.sleep(0.05)
    queue.close()
    waiter.join(2)
    assert result == [[]]
    with pytest.raises(WorkerStoppingError):
        queue.put(item("too late"))
    assert queue.take_batch(4, 0.0, timeout_s=0.0) == []
    other: RequestQueue[Item] = RequestQueue(capacity=4, max_bytes=1000)
    other.put(item("later"))
    other.put(item("late", ("m", 2), age_s=1))
    assert [i.name for i in other.drain()] == ["late", "later"] and len(other) == 0


def test_a_second_close_is_a_state_error_of_the_worker() -> None:
    queue: RequestQueue[Item] = RequestQueue(capacity=4, max_bytes=1000)
    queue.close()
    with pytest.raises(QueueStateError, match="already closed") as caught:
        queue.close()
    assert isinstance(caught.value, WorkerStateError)


# -- statistics and telemetry -----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_utilization_is_the_busy_share_of_the_window() -> None:
    clock = FakeClock()
    stats = WorkerStats(window_s=1.0, clock=clock)
    stats.batch_started(3)
    assert stats.snapshot().in_flight == 3
    clock.now += 0.3
    stats.batch_finished()
    clock.now += 0.7
    assert stats.snapshot().utilization == pytest.approx(0.3)
    clock.now += 0.2  # the window now starts 0.2 s into that batch
    assert stats.snapshot().utilization == pytest.approx(0.1)
    stats.batch_started(1)
    clock.now += 0.5
    assert stats.snapshot().utilization == pytest.approx(0.5)  # running batch counts
    clock.now += 2
    assert stats.snapshot().utilization == 1.0


def test_service_time_and_batch_size_are_ewmas() -> None:
    stats = WorkerStats(window_s=1.0)
    for batch in (4, 2):
        stats.mark_warm("m", 3, batch, exact_path=False)
    stats.record_compute("m", 3, batch_size=4, compute_ms=10.0)
    stats.record_compute("m", 3, batch_size=2, compute_ms=20.0)
    snapshot = stats.snapshot()
    assert snapshot.service_ms == {"m": {3: pytest.approx(10 + EWMA_ALPHA * 10)}}
    assert snapshot.batch_size == pytest.approx(4 - EWMA_ALPHA * 2)
    stats.count("served", 2)
    stats.count("expired")
    assert (stats.snapshot().served, stats.snapshot().expired) == (2, 1)


def test_telemetry_message_and_significant_change() -> None:
    stats = WorkerStats(window_s=1.0)
    depth = [0]
    published: list[bytes] = []
    reporter = TelemetryReporter(
        stats,
        worker_id="w",
        device="cpu",
        models={"m": [0, 3]},
        queue_capacity=16,
        max_batch=4,
        interval_s=1.0,
        min_gap_s=0.0,
        queue_depth=lambda: depth[0],
        publish=published.append,
    )
    first = reporter.publish_now()
    assert parse_telemetry(published[0]) == first and first.seq == 1
    assert not reporter._changed_significantly()
    depth[0] = reporter.depth_step  # 16 // 8 = 2 more queued requests
    assert reporter._changed_significantly()
    depth[0] = 0
    stats.mark_warm("m", 3, 1, exact_path=False)
    stats.record_compute("m", 3, 1, 5.0)
    assert reporter._changed_significantly()  # a split's first service time
    second = reporter.publish_now()
    assert second.seq == 2 and second.service_ms == {"m": {3: 5.0}}


def test_a_cold_call_is_counted_but_not_advertised_and_old_figures_age_out() -> None:
    clock = FakeClock()
    stats = WorkerStats(window_s=1.0, clock=clock, service_max_age_s=60.0)
    stats.record_compute("m", 5, 1, 1550.0)  # the first call of this shape: cold
    assert stats.snapshot().service_ms == {}
    stats.record_compute("m", 5, 1, 15.0)
    assert stats.snapshot().service_ms == {"m": {5: 15.0}}
    assert stats.snapshot().splits["m"][5].batches == 2  # both counted
    stats.record_compute("m", 5, 1, 20.0, exact_path=True)  # another path: cold again
    assert stats.snapshot().service_ms == {"m": {5: 15.0}}
    clock.now += 61.0
    assert stats.snapshot().service_ms == {}  # a minute without a call: withdrawn


def test_telemetry_thread_publishes_on_change_between_intervals() -> None:
    stats = WorkerStats(window_s=10.0)
    depth = [0]
    published: list[bytes] = []
    arrived = threading.Condition()

    def publish(payload: bytes) -> None:
        with arrived:
            published.append(payload)
            arrived.notify_all()

    def wait_for(count: int) -> bool:
        with arrived:
            return arrived.wait_for(lambda: len(published) >= count, timeout=5.0)

    reporter = TelemetryReporter(
        stats,
        worker_id="w",
        device="cpu",
        models={"m": [1]},
        queue_capacity=8,
        max_batch=1,
        interval_s=10.0,
        min_gap_s=0.0,
        queue_depth=lambda: depth[0],
        publish=publish,
    )
    reporter.start()
    try:
        assert wait_for(1)  # the first message, at start
        assert parse_telemetry(published[0]).queue_depth == 0
        depth[0] = 5
        reporter.nudge()
        # The interval is 10 s, so only the nudge can bring a second message this soon.
        assert wait_for(2)
        assert parse_telemetry(published[-1]).queue_depth == 5
    finally:
        reporter.stop()


# -- configuration ------------------------------------------------------------------------------


def test_example_config_is_valid_and_complete() -> None:
    config = load_worker_config(EXAMPLE_CONFIG)
    assert config.worker_id == "worker-1" and config.models[0].name == "efficientnet-lite0"
    # every key of the model appears in the example (so the example documents all of them)
    text = EXAMPLE_CONFIG.read_text()
    assert all(f"{key}:" in text for key in WorkerConfig.model_fields)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("max_batchh: 4\n", "max_batchh: unknown key"),
        (
            "models:\n  - name: efficientnet-lite0\n    splitz: all\n",
            "models.0.splitz: unknown key",
        ),
        ("broker:\n  prot: 1884\n", "broker.prot: unknown key"),
        ("worker_id: a/b\n", "worker_id: worker id 'a/b' contains '/'"),
        ('share_group: "$grp"\n', "share_group: share group '$grp' starts with '$'"),
        ("models:\n  - name: a+b\n", "models.0.name: model 'a+b' contains '+'"),
        ('topic_prefix: "x/#"\n', "topic_prefix: level of topic prefix 'x/#'"),
        ("models:\n  - name: m\n  - name: m\n", "model listed twice: m"),
        ("models:\n  - name: m\n    splits: [1, 1]\n", "models.0.splits"),
        ("max_batch: 0\n", "max_batch:"),
        ("device: tpu\n", "device:"),
    ],
)
def test_config_errors_name_the_file_and_the_key(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_worker_config(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_worker_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_worker_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_worker_config(tmp_path / "bad.yaml")


def test_overrides_keep_the_rest_of_the_broker_settings() -> None:
    base = worker_config_from_mapping({"broker": {"host": "edge", "port": 1884, "keepalive": 9}})
    config = with_overrides(base, {"broker": {"host": None, "port": 2000}, "max_batch": 2})
    assert (config.broker.host, config.broker.port, config.broker.keepalive) == ("edge", 2000, 9)
    assert config.max_batch == 2


def test_cli_reports_a_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("queue_capacty: 4\n")
    assert worker_main(["--config", str(path)]) == 2
    assert "queue_capacty: unknown key" in capsys.readouterr().err


# -- runners ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0() -> SplitModel:
    torch.set_num_threads(1)
    return load_model("efficientnet-lite0")


def test_candidate_codec_default_follows_the_devices() -> None:
    from splitting.profiles import DEFAULT_DECISION_CODEC

    assert ModelEntry().candidate_codec == DEFAULT_DECISION_CODEC


def test_split_selection(lite0: SplitModel) -> None:
    entry = WorkerConfig.model_validate({"models": [{"name": "efficientnet-lite0"}]}).models[0]
    assert resolve_splits(lite0, entry) == list(range(lite0.n))
    chosen = WorkerConfig.model_validate(
        {"models": [{"name": "efficientnet-lite0", "splits": [9, 0]}]}
    ).models[0]
    assert resolve_splits(lite0, chosen) == [0, 9]
    too_far = chosen.model_copy(update={"splits": [lite0.n]})
    with pytest.raises(RunnerError, match="out of range"):
        resolve_splits(lite0, too_far)
    candidates = candidate_splits(lite0, "int5")
    assert candidates[0] == 0 and candidates == sorted(candidates) and lite0.n not in candidates


def test_echo_runner_validates_like_the_real_one() -> None:
    info = echo_model_info()
    runner = EchoTailRunner([info])
    image = encode_frame(
        np.zeros(info.split_shapes[0], np.float32),  # split 0 must carry a uint8 image
        codec="lossless",
        request_id="r",
        model="echo",
        fingerprint=info.fingerprint,
        split=0,
    )
    with pytest.raises(BadInputError, match="uint8"):
        runner.decode(image, "echo", 0)


def test_model_runner_batches_in_order_and_refuses_unserved_splits(lite0: SplitModel) -> None:
    runner = ModelTailRunner({lite0.name: lite0}, {lite0.name: [0]})
    images = [lite0.prepare_image(image) for _, image in sample_images()[:3]]
    frames = [
        runner.decode(
            encode_frame(
                image,
                codec="lossless",
                request_id=f"r{i}",
                model=lite0.name,
                fingerprint=lite0.fingerprint,
                split=0,
            ),
            lite0.name,
            0,
        )
        for i, image in enumerate(images)
    ]
    batched = runner.run_batch(lite0.name, 0, frames)
    alone = [runner.run_batch(lite0.name, 0, [frame])[0] for frame in frames]
    assert [[p.index for p in top] for top in batched] == [[p.index for p in t] for t in alone]
    inner = encode_frame(
        lite0.head(lite0.preprocess(images[0]), 5)[0].numpy(),
        codec="lossless",
        request_id="r",
        model=lite0.name,
        fingerprint=lite0.fingerprint,
        split=5,
    )
    with pytest.raises(SplitNotServedError, match="not 5"):
        runner.decode(inner, lite0.name, 5)
    with pytest.raises(RunnerError, match=rf"splits 0\.\.{lite0.n - 1}"):
        ModelTailRunner({lite0.name: lite0}, {lite0.name: [lite0.n]})
