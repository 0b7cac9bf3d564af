"""Every decode thread decodes every codec once before the worker connects, so no request's
CPU budget pays a codec's one-time setup."""

from __future__ import annotations

import threading

from edge_worker.decoding import DecodePool
from edge_worker.runner import EchoTailRunner, accepted_codecs, echo_model_info, warm_up_frames
from schemas.frame import decode_frame


def test_warm_up_runs_once_on_every_decode_thread() -> None:
    pool = DecodePool(3, 0.1, max_wait_s=1.0)
    seen: list[int] = []
    lock = threading.Lock()

    def note() -> None:
        with lock:
            seen.append(threading.get_ident())

    pool.warm_up(note)
    pool.close()
    assert len(seen) == 3 and len(set(seen)) == 3


def test_the_warm_up_frames_cover_every_codec_a_worker_decodes() -> None:
    info = echo_model_info("echo")
    runner = EchoTailRunner([info], served={"echo": [0, 1]})
    frames = warm_up_frames(runner.model_infos(), runner.served())
    codecs = {(split, decode_frame(frame).header.codec) for _, split, frame in frames}
    assert codecs == {(0, c) for c in accepted_codecs(0)} | {(1, c) for c in accepted_codecs(1)}
    for model, split, frame in frames:  # each one is a frame the worker accepts
        assert runner.decode(frame, model, split).header.split == split
