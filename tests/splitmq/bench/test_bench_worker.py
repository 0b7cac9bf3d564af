"""The worker benchmark on a few requests: its JSON keys and what the answer comparison says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmq.bench.worker import WorkerBenchOptions, best_middle
from splitmq.cli import main
from splitmq_base.errors import ConfigurationError

pytestmark = pytest.mark.integration


def test_cli_compares_batched_and_unbatched_through_a_real_worker(tmp_path: Path) -> None:
    out = tmp_path / "worker.json"
    argv = ["bench", "worker", "--split", "13", "--requests", "12", "--max-batch", "4"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["through"] == "mqtt" and result["best_middle_split"] == 13
    assert result["batched"]["per_s"] > 0 and result["unbatched"]["per_s"] > 0
    assert result["speedup"] == pytest.approx(
        result["batched"]["per_s"] / result["unbatched"]["per_s"]
    )
    assert 0 <= result["overhead_share"] <= 1
    entry = result["per_split"]["13"]
    # The unbatched worker never batches; every request was answered in both settings.
    assert entry["mqtt"]["unbatched"]["mean_batch"] == 1.0
    assert entry["mqtt"]["batched"]["requests"] == entry["mqtt"]["unbatched"]["requests"] == 12
    answer = result["answer"]
    assert answer["samples"] == 21 and answer["batch"] == 4
    # Batched CPU kernels may round differently, never by enough to change a class here.
    assert answer["top1_agreement"] == 1.0
    assert 0 <= answer["max_abs_logit_diff"] < 1e-3


def test_best_middle_is_the_first_split_under_half_the_jpeg() -> None:
    assert best_middle([7, 8, 13, 14], {7: 9000, 8: 7000, 13: 5000, 14: 4000}, 15000) == 8
    assert best_middle([7, 8], {7: 9000, 8: 8000}, 15000) == 8  # none small enough: smallest


def test_options_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        WorkerBenchOptions(max_batch=1)
    with pytest.raises(ConfigurationError):
        WorkerBenchOptions(requests=2, max_batch=8)


@pytest.mark.slow
def test_the_onnxruntime_backend_batches_and_answers_through_the_same_benchmark(
    tmp_path: Path, lite0_export: Path
) -> None:
    out = tmp_path / "worker-ort.json"
    argv = ["bench", "worker", "--split", "13", "--requests", "8", "--max-batch", "4"]
    argv += ["--backend", "onnxruntime", "--export-dir", str(lite0_export.parent), "--no-mqtt"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["backend"], result["through"]) == ("onnxruntime", "in_process")
    assert result["batched"]["per_s"] > 0 and result["unbatched"]["per_s"] > 0
    assert result["answer"]["top1_agreement"] == 1.0
