"""The paper's grid: natural bottlenecks, argmin per cell, and `splitmq bench grid` end to end."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from splitmq.cli import main
from splitting.grid import (
    GridInputs,
    byte_bottlenecks,
    evaluate_grid,
    paper_bottlenecks,
    paper_bytes,
)
from splitting.registry import ModelSpec, load_model, register_model, unregister_model
from tests.support.grid_model import NAME, GridNet, grid_blocks

torch.set_num_threads(1)


@pytest.fixture
def gridnet() -> Iterator[str]:
    register_model(ModelSpec(name=NAME, build=GridNet, blocks=grid_blocks, input_size=32))
    yield NAME
    unregister_model(NAME)


def test_paper_rule_keeps_outputs_smaller_than_the_input_and_all_earlier(gridnet: str) -> None:
    shapes = load_model(gridnet).split_shapes()
    # split 1 (16384) is larger than the input; 3 (4096) and 5 (256) not below an earlier one
    assert paper_bottlenecks(shapes) == [2, 4]
    assert paper_bytes(shapes)[0] == 2 * 3072
    assert paper_bytes(shapes)[4] == pytest.approx(2 * 128)


def test_byte_rule_compares_against_the_input_frame() -> None:
    # split 0's JPEG is 1000 bytes: 1200 is no bottleneck, 900 is, 950 is not below 900
    assert byte_bottlenecks([1000, 1200, 900, 950, 400, 0]) == [2, 4]
    assert byte_bottlenecks([100, 5000, 4000, 0]) == []


def _small_profile() -> GridInputs:
    head = [0.0, 3.0, 7.0, 12.0, 30.0]
    wire = [50_000.0, 80_000.0, 8_000.0, 2_000.0, 0.0]
    base = [10.0, 9.0, 6.0, 2.0, 0.0]
    return GridInputs(head, wire, lambda k, b: base[k] * (1 + 0.5 * (b - 1)), [0, 2, 3, 4])


def test_argmin_matches_brute_force_and_gains_follow() -> None:
    inputs = _small_profile()
    rates = [1e5, 1e6, 1e7, 1e8]
    batches = [1, 5, 30]
    result = evaluate_grid(inputs, rates, batches)
    splits = [0, 2, 3, 4]

    def t(k: int, rate: float, batch: int) -> float:
        tail = inputs.tail_ms(k, batch) if k < 4 else 0.0
        return inputs.head_ms[k] + 1e3 * inputs.wire_bytes[k] / rate + tail

    mean = {k: np.mean([t(k, r, b) for r in rates for b in batches]) for k in splits}
    static = min(splits, key=lambda k: mean[k])
    assert result.static_split == static
    for (i, rate), (j, batch) in itertools.product(enumerate(rates), enumerate(batches)):
        best = min(splits, key=lambda k: t(k, rate, batch))
        assert result.argmin[i, j] == best
        dynamic = t(best, rate, batch)
        base = t(static, rate, batch)
        assert result.gain_vs_static[i, j] == pytest.approx((base - dynamic) / base)
        assert result.gain_vs_local[i, j] == pytest.approx(
            (t(4, rate, batch) - dynamic) / t(4, rate, batch)
        )
    assert result.ever_optimal == sorted({int(k) for k in result.argmin.ravel()})
    assert len(result.ever_optimal) > 1  # the profile is built so that the choice changes
    assert result.max_gain_vs_static > 0


def test_bench_grid_writes_counts_gains_and_a_heatmap(gridnet: str, tmp_path: Path) -> None:
    out = tmp_path / "grid.json"
    code = main(
        [
            "bench", "grid", "--model", gridnet, "--json", str(out), "--plots", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache"), "--points", "6", "--max-batch", "4",
        ]
    )  # fmt: skip
    assert code == 0
    entry = json.loads(out.read_text())["models"][gridnet]
    assert entry["bottlenecks"]["paper"] == 2
    assert set(entry["bottlenecks"]["bytes"]) == {"fp16", "int8", "int5", "int4"}
    grid = entry["grids"]["paper"]["paper"]
    assert np.asarray(grid["argmin"]).shape == (6, 4)
    assert set(grid["ever_optimal"]) <= set(grid["splits"])
    assert entry["max_gain_vs_static"] == pytest.approx(grid["max_gain_vs_static"])
    assert 0 <= entry["max_gain_vs_static"] < 1
    assert (tmp_path / f"grid-{gridnet}.png").stat().st_size > 1000
    assert list((tmp_path / "cache").glob(f"grid-{gridnet}-*.json"))  # the profile is cached
