"""The paper's experiment as a pure computation: natural bottlenecks and a (rate, batch) grid.

Bakhtiarnia et al. (Dynamic Split Computing, ICASSP 2023) count natural bottlenecks by element
counts against a float16 input, and give split l the latency

    T_l = T_head(1..l) + D * c_l / r + T_tail(l+1..L)

for an input of D bytes, a data rate r and c_l = |h_l| / |x|. The server's load is the batch size
of the tail. Dynamic splitting takes argmin_l T_l in each (rate, batch) cell; its gain is measured
against the best static split, local execution and full offload.

This module also runs the same grid under this project's accounting: the bytes a split really
puts on the wire (the frame under a codec, split 0 the JPEG of the input). No I/O here: the
caller supplies shapes, bytes and times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from splitting.errors import ProfileError

FLOAT16_BYTES = 2
MB = 1e6  # the paper's MB/s: 10^6 bytes per second
MBIT = 1e6 / 8  # bytes per second in one Mbit/s

Numbers = Sequence[float] | np.ndarray


def elements(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def paper_ratios(split_shapes: Sequence[Sequence[int]]) -> list[float]:
    """c_k = |h_k| / |x| for k = 0..n (c_0 = 1: the input itself; c_n = 0: nothing sent)."""
    if len(split_shapes) < 2:
        raise ProfileError("a grid needs at least one block (two splits)")
    size = elements(split_shapes[0])
    if size <= 0:
        raise ProfileError("the input has no elements")
    last = len(split_shapes) - 1
    return [1.0, *(elements(s) / size for s in split_shapes[1:last]), 0.0]


def paper_bottlenecks(split_shapes: Sequence[Sequence[int]]) -> list[int]:
    """Splits 1..n-1 whose output has fewer elements than the input and every earlier one."""
    ratios = paper_ratios(split_shapes)
    chosen: list[int] = []
    smallest = 1.0
    for k in range(1, len(ratios) - 1):
        if ratios[k] < smallest:
            chosen.append(k)
            smallest = ratios[k]
    return chosen


def byte_bottlenecks(bytes_by_k: Sequence[int]) -> list[int]:
    """Splits 1..n-1 that send fewer bytes than split 0 (the JPEG) and every earlier split."""
    chosen: list[int] = []
    smallest = bytes_by_k[0]
    for k in range(1, len(bytes_by_k) - 1):
        if bytes_by_k[k] < smallest:
            chosen.append(k)
            smallest = bytes_by_k[k]
    return chosen


def paper_bytes(split_shapes: Sequence[Sequence[int]]) -> list[float]:
    """D * c_k with D the float16 input's bytes: the paper's bytes on the wire per split."""
    input_bytes = FLOAT16_BYTES * elements(split_shapes[0])
    return [input_bytes * c for c in paper_ratios(split_shapes)]


@dataclass(frozen=True)
class GridInputs:
    """Everything one grid needs: per split k = 0..n.

    `head_ms[k]` the device time of blocks [0, k) (head_ms[0] = 0); `wire_bytes[k]` what split k
    sends (wire_bytes[n] = 0); `tail_ms(k, batch)` the server time of blocks [k, n) in a batch of
    `batch` (0 for k = n); `splits` the splits dynamic may choose (0 and n always among them).
    """

    head_ms: Sequence[float]
    wire_bytes: Sequence[float]
    tail_ms: Callable[[int, int], float]
    splits: Sequence[int]

    @property
    def n(self) -> int:
        return len(self.head_ms) - 1


@dataclass(frozen=True)
class GridResult:
    """The grid's latencies and what dynamic splitting gains.

    `latency_ms[i, j, s]`: rate i, batch j, split `splits[s]`. Gains are fractions
    (T_baseline - T_dynamic) / T_baseline per cell.
    """

    rates: np.ndarray
    batches: np.ndarray
    splits: tuple[int, ...]
    latency_ms: np.ndarray
    argmin: np.ndarray  # the chosen split (an index k, not a position in `splits`) per cell
    static_split: int
    gain_vs_static: np.ndarray
    gain_vs_local: np.ndarray
    gain_vs_offload: np.ndarray

    @property
    def ever_optimal(self) -> list[int]:
        return sorted({int(k) for k in self.argmin.ravel()})

    @property
    def max_gain_vs_static(self) -> float:
        return float(self.gain_vs_static.max())

    def region(self, threshold: float = 0.0) -> dict[str, float] | None:
        """Rate and batch bounds of the cells where dynamic gains more than `threshold`."""
        rows, cols = np.nonzero(self.gain_vs_static > threshold)
        if rows.size == 0:
            return None
        return {
            "rate_min": float(self.rates[rows.min()]),
            "rate_max": float(self.rates[rows.max()]),
            "batch_min": float(self.batches[cols.min()]),
            "batch_max": float(self.batches[cols.max()]),
            "cells": int(rows.size),
        }


def latency_grid(inputs: GridInputs, rates: Numbers, batches: Numbers) -> np.ndarray:
    """T[i, j, s] = head(k) + bytes(k) / rate_i + tail(k, batch_j) for k = splits[s] (ms)."""
    rate = np.asarray(rates, dtype=np.float64)
    if rate.size == 0 or not np.all(rate > 0):
        raise ProfileError("rates must be positive bytes per second")
    out = np.empty((rate.size, len(batches), len(inputs.splits)))
    for s, k in enumerate(inputs.splits):
        wire = 1e3 * float(inputs.wire_bytes[k]) / rate  # ms per rate
        for j, batch in enumerate(batches):
            tail = inputs.tail_ms(k, int(batch)) if k < inputs.n else 0.0
            out[:, j, s] = float(inputs.head_ms[k]) + wire + tail
    return out


def evaluate_grid(inputs: GridInputs, rates: Numbers, batches: Numbers) -> GridResult:
    """Argmin per cell and the gains over the best static split, local and full offload.

    The best static split is the one split with the least mean latency over the whole grid
    (the single choice a system without feedback would make for this range).
    """
    splits = tuple(sorted(set(inputs.splits) | {0, inputs.n}))
    full = GridInputs(inputs.head_ms, inputs.wire_bytes, inputs.tail_ms, splits)
    latency = latency_grid(full, rates, batches)
    best = latency.argmin(axis=2)
    dynamic = latency.min(axis=2)
    static_pos = int(latency.mean(axis=(0, 1)).argmin())

    def gain(pos: int) -> np.ndarray:
        base = latency[:, :, pos]
        return np.asarray((base - dynamic) / base)

    return GridResult(
        rates=np.asarray(rates, dtype=np.float64),
        batches=np.asarray(batches, dtype=np.float64),
        splits=splits,
        latency_ms=latency,
        argmin=np.asarray(splits)[best],
        static_split=splits[static_pos],
        gain_vs_static=gain(static_pos),
        gain_vs_local=gain(splits.index(inputs.n)),
        gain_vs_offload=gain(0),
    )


def paper_rates(points: int = 32) -> np.ndarray:
    """1-128 MB/s, log-spaced, in bytes per second."""
    return np.geomspace(1 * MB, 128 * MB, points)


def cellular_rates(points: int = 32) -> np.ndarray:
    """0.1-50 Mbit/s, log-spaced, in bytes per second (the uplink traces' range)."""
    return np.geomspace(0.1 * MBIT, 50 * MBIT, points)


def server_batches(largest: int = 30) -> np.ndarray:
    return np.arange(1, largest + 1)
