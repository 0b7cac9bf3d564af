"""`splitmq bench prepare` runs for real on the sample photos: both ways' times, how far the
recipe's pixels are from Pillow's, and a JSON report with the common provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmq.bench.prepare import PrepareReport
from splitmq.cli import main


def test_the_prepare_bench_reports_times_and_pixel_distance_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "prepare.json"
    argv = ["bench", "prepare", "--repeats", "1", "--enlarge", "2", "--no-model"]
    assert main([*argv, "--json", "-"]) == 0  # the report alone on stdout
    report = PrepareReport.model_validate_json(capsys.readouterr().out)
    assert set(report.sets) == {"samples", "samples_x2"}
    for photo_set in report.sets.values():
        assert photo_set.photos == report.photos > 0
        assert photo_set.recipe.median_ms > 0 and photo_set.pillow.median_ms > 0
        assert photo_set.max_abs_diff <= 1 and 0 < photo_set.differing_values < 0.01
    assert report.sets["samples_x2"].median_pixels == 4 * report.sets["samples"].median_pixels
    assert report.top1_agree is None and report.provenance.settings["model"] is None
    assert (
        main(
            [
                "bench",
                "prepare",
                "--repeats",
                "1",
                "--enlarge",
                "1",
                "--no-model",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    assert set(json.loads(path.read_text())["sets"]) == {"samples"}
