"""JSON messages: round trips, strict parsing, and JSON Schemas that are current and agree with
the models on what is valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from schemas.errors import MessageError
from schemas.generate import MESSAGES, SCHEMA_DIR, main, render, stale_files
from schemas.messages import (
    ErrorInfo,
    ModelCatalogMessage,
    Prediction,
    PrepareRecipe,
    ResultMessage,
    ServerTimings,
    SplitSpec,
    StatusMessage,
    TelemetryMessage,
    encode_message,
    parse_catalog,
    parse_result,
    parse_status,
    parse_telemetry,
)

ROOT = Path(__file__).resolve().parents[2]


def _result(**overrides: Any) -> ResultMessage:
    fields: dict[str, Any] = {
        "request_id": "4b1d5f0c9e2a4d1e8f7a6b5c4d3e2f10",
        "status": "ok",
        "model": "efficientnet-lite0",
        "split": 9,
        "worker_id": "w1",
        "top5": [
            Prediction(index=207, label="golden retriever", score=0.91),
            Prediction(index=208, label="Labrador retriever", score=0.05),
        ],
        "timings": ServerTimings(queue_ms=0.4, decode_ms=0.1, compute_ms=2.3, batch_size=4),
    }
    fields.update(overrides)
    return ResultMessage(**fields)


def _telemetry(**overrides: Any) -> TelemetryMessage:
    fields: dict[str, Any] = {
        "worker_id": "w1",
        "ts": 1717171717.5,
        "seq": 42,
        "interval_s": 0.5,
        "device": "cuda:0",
        "models": {"efficientnet-lite0": [0, 3, 9, 15]},
        "queue_depth": 3,
        "queue_capacity": 64,
        "in_flight": 8,
        "batch_size": 6.5,
        "max_batch": 32,
        "utilization": 0.42,
        "service_ms": {"efficientnet-lite0": {0: 4.5, 9: 2.25, 15: 1.0}},
        "served": 1000,
        "rejected": 2,
        "expired": 1,
        "errors": 0,
    }
    fields.update(overrides)
    return TelemetryMessage(**fields)


def _status(**overrides: Any) -> StatusMessage:
    fields: dict[str, Any] = {"node_id": "w1", "role": "worker", "state": "online", "ts": 1.0}
    fields.update(overrides)
    return StatusMessage(**fields)


def _catalog(**overrides: Any) -> ModelCatalogMessage:
    fields: dict[str, Any] = {
        "model": "efficientnet-lite0",
        "fingerprint": "0123456789abcdef",
        "n": 2,
        "splits": [
            SplitSpec(split=0, shape=[224, 224, 3], dtype="uint8", codecs=["webp", "jpeg"]),
            SplitSpec(split=1, shape=[32, 112, 112], dtype="float32", codecs=["int8"]),
        ],
        "prepare": PrepareRecipe(size=224, crop_fraction=0.875),
    }
    fields.update(overrides)
    return ModelCatalogMessage(**fields)


def _json(message: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(encode_message(message))
    return decoded


# --------------------------------------------------------------------------------------------
# Round trips


def test_round_trips() -> None:
    for message, parse in (
        (_result(), parse_result),
        (
            _result(status="error", top5=[], error=ErrorInfo(code="truncated", message="cut")),
            parse_result,
        ),
        (_result(status="expired", top5=[], timings=None), parse_result),
        (_telemetry(), parse_telemetry),
        (_status(state="offline", role="device"), parse_status),
        (_catalog(), parse_catalog),
    ):
        data = encode_message(message)
        assert isinstance(data, bytes)
        assert parse(data) == message
        assert parse(data.decode("utf-8")) == message


def test_service_ms_keeps_integer_split_keys_through_json() -> None:
    data = encode_message(_telemetry())
    assert json.loads(data)["service_ms"] == {
        "efficientnet-lite0": {"0": 4.5, "9": 2.25, "15": 1.0}
    }
    parsed = parse_telemetry(data)
    assert parsed.service_ms["efficientnet-lite0"][9] == 2.25
    assert all(isinstance(k, int) for k in parsed.service_ms["efficientnet-lite0"])


def test_messages_are_frozen() -> None:
    message = _status()
    with pytest.raises(ValidationError):
        message.state = "offline"  # type: ignore[misc]


def test_defaults() -> None:
    result = ResultMessage(request_id="r", status="rejected", model="m", split=0, worker_id="w")
    assert result.v == 1 and result.top5 == [] and result.timings is None and result.error is None


# --------------------------------------------------------------------------------------------
# Invalid messages: parse_* raises MessageError naming the field


def _replace(message: Any, path: list[Any], value: Any) -> bytes:
    data = _json(message)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(data).encode()


_DELETE = object()

INVALID: list[tuple[str, Any, list[Any], Any, str]] = [
    ("result", _result, ["v"], 2, "v"),
    ("result", _result, ["extra"], 1, "extra"),
    ("result", _result, ["request_id"], _DELETE, "request_id"),
    ("result", _result, ["request_id"], "", "request_id"),
    ("result", _result, ["split"], "9", "split"),
    ("result", _result, ["split"], 9.5, "split"),
    ("result", _result, ["split"], -1, "split"),
    ("result", _result, ["status"], "done", "status"),
    ("result", _result, ["top5"], [{"index": 1, "label": "a", "score": 0.1}] * 6, "top5"),
    ("result", _result, ["top5", 0, "score"], "high", "score"),
    ("result", _result, ["timings", "batch_size"], 0, "batch_size"),
    ("result", _result, ["timings", "queue_ms"], -1.0, "queue_ms"),
    ("result", _result, ["error"], {"code": "x", "message": "m"}, "ok result carries no error"),
    ("result", _result, ["status"], "error", "needs error"),
    ("result", _result, ["status"], "expired", "carries no predictions"),
    ("telemetry", _telemetry, ["utilization"], 1.5, "utilization"),
    ("telemetry", _telemetry, ["queue_depth"], -1, "queue_depth"),
    ("telemetry", _telemetry, ["interval_s"], 0, "interval_s"),
    ("telemetry", _telemetry, ["max_batch"], 0, "max_batch"),
    ("telemetry", _telemetry, ["seq"], True, "seq"),
    ("telemetry", _telemetry, ["models", "m"], [-1], "models"),
    ("telemetry", _telemetry, ["service_ms", "efficientnet-lite0", "09"], 1.0, "09"),
    ("telemetry", _telemetry, ["service_ms", "efficientnet-lite0", "x"], 1.0, "service_ms"),
    ("telemetry", _telemetry, ["service_ms", "efficientnet-lite0", "3"], -2.0, "service_ms"),
    ("telemetry", _telemetry, ["device"], "", "device"),
    ("telemetry", _telemetry, ["errors"], _DELETE, "errors"),
    ("status", _status, ["role"], "broker", "role"),
    ("status", _status, ["state"], "away", "state"),
    ("status", _status, ["node_id"], 5, "node_id"),
    ("status", _status, ["ts"], "yesterday", "ts"),
    ("catalog", _catalog, ["v"], 2, "v"),
    ("catalog", _catalog, ["fingerprint"], "", "fingerprint"),
    ("catalog", _catalog, ["model"], "m" * 257, "model"),
    ("catalog", _catalog, ["n"], 0, "n"),
    ("catalog", _catalog, ["splits", 1, "shape"], [1] * 9, "shape"),
    ("catalog", _catalog, ["splits", 1, "shape", 0], -1, "shape"),
    ("catalog", _catalog, ["splits", 1, "codecs"], [], "codecs"),
    ("catalog", _catalog, ["splits", 1, "codecs"], ["int8"] * 33, "codecs"),
    ("catalog", _catalog, ["splits", 0, "extra"], 1, "extra"),
    ("catalog", _catalog, ["prepare", "size"], 0, "size"),
    ("catalog", _catalog, ["prepare", "crop_fraction"], 1.5, "crop_fraction"),
    ("catalog", _catalog, ["prepare", "channels"], "BGR", "channels"),
    ("catalog", _catalog, ["prepare", "layout"], "CHW", "layout"),
    ("catalog", _catalog, ["prepare", "dtype"], "float32", "dtype"),
]
PARSERS = {
    "result": parse_result,
    "telemetry": parse_telemetry,
    "status": parse_status,
    "catalog": parse_catalog,
}


@pytest.mark.parametrize(("kind", "make", "path", "value", "message"), INVALID)
def test_invalid_messages_are_refused(
    kind: str, make: Any, path: list[str], value: Any, message: str
) -> None:
    data = _replace(make(), path, value)
    with pytest.raises(MessageError, match=message):
        PARSERS[kind](data)


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xfe", b"not json", b"[]", b"null", b'{"v": 1', b'{"ts": NaN}']
)
@pytest.mark.parametrize("kind", list(PARSERS))
def test_garbage_is_a_message_error(kind: str, data: bytes) -> None:
    with pytest.raises(MessageError):
        PARSERS[kind](data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["n"], 3, "splits must list 0..2"),
        (["splits", 1, "split"], 0, "splits must list 0..1"),
        (["splits", 0, "shape"], [224, 224, 4], "split 0 must be uint8"),
        (["splits", 0, "dtype"], "float32", "split 0 must be uint8"),
        (["prepare", "size"], 256, "split 0 must be uint8"),
    ],
)
def test_catalog_splits_must_agree_with_n_and_the_prepare_recipe(
    path: list[Any], value: Any, message: str
) -> None:
    with pytest.raises(MessageError, match=message):
        parse_catalog(_replace(_catalog(), path, value))


def test_nan_is_refused_at_construction_and_in_json() -> None:
    with pytest.raises(ValidationError):
        _telemetry(ts=float("nan"))
    data = encode_message(_telemetry()).replace(b'"ts":1717171717.5', b'"ts":NaN')
    with pytest.raises(MessageError, match="ts"):
        parse_telemetry(data)


def test_encode_message_takes_only_messages() -> None:
    with pytest.raises(MessageError):
        encode_message(Prediction(index=1, label="a", score=0.5))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# JSON Schemas


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_schema_files_are_current() -> None:
    assert stale_files() == [], "run: python -m schemas.generate"
    for name, model in MESSAGES.items():
        assert (SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8") == render(model)


def test_generate_writes_and_checks(tmp_path: Path) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1  # nothing there yet
    assert main(["--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "catalog.schema.json",
        "result.schema.json",
        "state.schema.json",
        "status.schema.json",
        "telemetry.schema.json",
    ]
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "status.schema.json").write_text("{}", encoding="utf-8")
    assert main(["--check", "--dir", str(tmp_path)]) == 1


@pytest.mark.integration  # runs `python -m schemas.generate` in a fresh interpreter
def test_generate_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "schemas.generate", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("*.schema.json"))) == len(MESSAGES) == 5


def test_valid_messages_satisfy_their_schemas() -> None:
    samples: dict[str, list[Any]] = {
        "result": [
            _result(),
            _result(status="error", top5=[], error=ErrorInfo(code="bad_magic", message="m")),
            _result(status="rejected", top5=[], timings=None),
        ],
        "telemetry": [_telemetry(), _telemetry(models={}, service_ms={})],
        "status": [_status(), _status(role="device", state="offline")],
        "catalog": [_catalog()],
    }
    for name, messages in samples.items():
        validator = _validator(name)
        for message in messages:
            errors = list(validator.iter_errors(_json(message)))
            assert errors == [], errors


@pytest.mark.parametrize(("kind", "make", "path", "value", "message"), INVALID)
def test_schemas_refuse_what_the_models_refuse(
    kind: str, make: Any, path: list[str], value: Any, message: str
) -> None:
    document = json.loads(_replace(make(), path, value))
    assert not _validator(kind).is_valid(document), (kind, path, value)


@pytest.mark.integration  # imports the schemas in a fresh interpreter
def test_schemas_import_no_torch() -> None:
    code = (
        "import sys, schemas.frame, schemas.codecs, schemas.messages, schemas.topics, "
        "schemas.generate; assert 'torch' not in sys.modules, 'schemas imported torch'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_telemetry_with_a_400_digit_queue_depth_is_refused_not_overflowing() -> None:
    import json as _json

    from schemas.errors import MessageError as _MessageError
    from schemas.messages import TelemetryMessage as _Telemetry
    from schemas.messages import encode_message as _encode
    from schemas.messages import parse_telemetry as _parse_telemetry

    good = _Telemetry(
        worker_id="w1",
        ts=1.0,
        seq=0,
        interval_s=1.0,
        device="cpu",
        models={"m": [1]},
        queue_depth=0,
        queue_capacity=8,
        in_flight=0,
        batch_size=1.0,
        max_batch=8,
        utilization=0.0,
        service_ms={"m": {1: 2.0}},
        served=0,
        rejected=0,
        expired=0,
        errors=0,
    )
    text = _encode(good).decode().replace('"queue_depth":0', '"queue_depth":1' + "0" * 400)
    assert "0" * 400 in text
    with pytest.raises(_MessageError, match="queue_depth"):
        _parse_telemetry(text)
    huge_ms = _json.loads(_encode(good))
    huge_ms["service_ms"] = {"m": {"1": 1e300}}
    with pytest.raises(_MessageError, match="service_ms"):
        _parse_telemetry(_json.dumps(huge_ms))


def test_a_retained_message_is_read_as_its_topics_node_or_refused():
    from schemas.retained import read_telemetry
    from schemas.topics import Topics

    topics = Topics()
    payload = encode_message(_telemetry())
    worker = json.loads(payload)["worker_id"]
    assert read_telemetry(topics, topics.telemetry(worker), payload)[1] is not None
    assert read_telemetry(topics, topics.telemetry(worker), b"") == (worker, None)  # cleared
    with pytest.raises(MessageError, match="speaks for"):
        read_telemetry(topics, topics.telemetry("someone-else"), payload)
