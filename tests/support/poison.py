"""Malformed frames built from a good echo frame: the classes of poison a worker must refuse
alone. Used by the worker's isolation tests and the fuzz test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_worker.runner import echo_model_info
from schemas.frame import encode_frame
from tests.support.frames import build_frame, split_frame
from tests.support.worker_clients import echo_frame


def good_frame(request_id: str, *, split: int = 1) -> bytes:
    return echo_frame(request_id, split=split)


def with_header(request_id: str, change: Callable[[dict[str, Any]], str | None]) -> bytes:
    """A good frame whose header `change` edits in place (or replaces by returning raw text)."""
    header, params, payload = split_frame(good_frame(request_id))
    text = change(header)
    return build_frame(text if text is not None else json.dumps(header), params, payload)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        header[key] = value

    return change


def _raw(key: str, literal: str) -> Callable[[dict[str, Any]], str]:
    """Replace a field's JSON value by a raw literal (a 400-digit integer, a lone surrogate)."""

    def change(header: dict[str, Any]) -> str:
        header[key] = "@@"
        return json.dumps(header).replace('"@@"', literal)

    return change


def _big_float(request_id: str) -> bytes:
    """A float64 lossless tensor holding 1e300: finite as float64, infinite as the tail's fp32."""
    info = echo_model_info()
    tensor = np.zeros(info.split_shapes[1], dtype=np.float64)
    tensor[0] = 1e300
    return encode_frame(
        tensor,
        codec="lossless",
        request_id=request_id,
        model=info.name,
        fingerprint=info.fingerprint,
        split=1,
    )


HUGE = "1" + "0" * 400
# name -> (frame builder taking the request id, the error code the worker must answer with)
POISON: dict[str, tuple[Callable[[str], bytes], str]] = {
    "deadline_huge_int": (lambda rid: with_header(rid, _raw("deadline_ms", HUGE)), "bad_header"),
    "deadline_4300_digits": (
        lambda rid: with_header(rid, _raw("deadline_ms", "9" * 4300)),
        "bad_header",
    ),
    "deadline_too_long": (lambda rid: with_header(rid, _set("deadline_ms", 1e300)), "bad_header"),
    "timestamp_huge_int": (
        lambda rid: with_header(rid, _raw("timestamps", '{"sent": ' + HUGE + "}")),
        "bad_header",
    ),
    "timestamp_key_surrogate": (
        lambda rid: with_header(rid, _raw("timestamps", '{"\\ud800": 1.0}')),
        "bad_header",
    ),
    "request_id_surrogate": (
        lambda rid: with_header(rid, _raw("request_id", '"\\ud800"')),
        "bad_header",
    ),
    "request_id_oversize": (
        lambda rid: with_header(rid, _set("request_id", "r" * 20_000)),
        "bad_header",
    ),
    "device_id_surrogate": (
        lambda rid: with_header(rid, _raw("device_id", '"a\\udfffb"')),
        "bad_header",
    ),
    "split_huge_int": (lambda rid: with_header(rid, _raw("split", HUGE)), "bad_header"),
    "raw_bytes_huge_int": (lambda rid: with_header(rid, _raw("raw_bytes", HUGE)), "bad_header"),
    "shape_huge_int": (lambda rid: with_header(rid, _raw("shape", "[" + HUGE + "]")), "bad_header"),
    "float64_1e300": (_big_float, "bad_input"),
}
