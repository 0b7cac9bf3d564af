"""A full garbage collection that starts in a decode thread is the whole process's cost, not the
frame's: it is not charged to the frame's CPU budget, even while it is still running."""

from __future__ import annotations

import gc
import threading
import time

from edge_worker.decoding import DecodePool
from splitmq_base.gcwatch import GC_PAUSES


def slow_collection() -> None:
    """A full collection over a large heap: tens of ms of CPU on this machine."""
    gc.collect()


def collecting_decode(item: bytes) -> bytes:
    slow_collection()
    return item


def test_a_collection_inside_a_decode_is_not_charged_to_its_budget() -> None:
    heap = [[i] for i in range(2_000_000)]  # many tracked objects: a slow full collection
    started = time.thread_time()
    slow_collection()
    assert time.thread_time() - started > 0.02, "the collection must outlast the budget"
    pool = DecodePool(1, 0.01, max_wait_s=10.0)
    try:
        (outcome,) = pool.decode_all([b"frame"], collecting_decode)
    finally:
        pool.close()
    assert outcome.error is None and outcome.value == b"frame"
    del heap


def test_each_thread_counts_its_own_collections() -> None:
    GC_PAUSES.install()
    me = threading.get_ident()
    before = GC_PAUSES.thread_cpu_s(me)
    slow_collection()
    mine = GC_PAUSES.thread_cpu_s(me)
    assert mine > before
    other = threading.Thread(target=slow_collection)
    other.start()
    other.join()
    assert GC_PAUSES.thread_cpu_s(me) == mine  # another thread's collection is its own
