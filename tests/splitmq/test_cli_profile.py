"""`splitmq profile`: the table and the one-object JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from splitmq.cli import main
from splitting.profiles import ModelProfile, natural_bottlenecks

pytestmark = pytest.mark.slow  # each profiles a model through the CLI

torch.set_num_threads(min(2, torch.get_num_threads()))

QUICK = ["--images", "2", "--repeats", "1"]


def _profile_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["profile", "--model", "efficientnet-lite0", "--json", *QUICK, *extra]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object, nothing else on stdout


def test_json_lists_every_split_with_bytes_per_codec(capsys: pytest.CaptureFixture[str]) -> None:
    data = _profile_json(capsys)
    assert data["model"] == "efficientnet-lite0"
    splits = data["splits"]
    assert [s["k"] for s in splits] == list(range(19))
    for split in splits:
        assert set(split) >= {"k", "name", "shape", "bytes", "device_ms", "candidate", "agreement"}
    for split in splits[1:]:
        assert set(split["bytes"]) == {"lossless", "fp16", "int8", "int5", "int4"}
    # Split 0 sends the image: lossless WebP (the default, exact) or JPEG (opt-in, lossy).
    assert set(splits[0]["bytes"]) == {"webp", "jpeg", "lossless"}
    assert data["input_codec"] == "webp"
    assert data["input_bytes"] == splits[0]["bytes"]["webp"]
    assert splits[0]["agreement"]["webp"] == 1.0
    for split in splits[1:-1]:
        assert split["agreement"]["lossless"] == 1.0  # exact tensors, exact answers
        assert all(0.0 <= a <= 1.0 for a in split["agreement"].values())
    assert splits[0]["shape"] == [224, 224, 3] and splits[-1]["shape"] == []
    assert splits[13]["name"] == "blocks.11" and splits[13]["shape"] == [192, 7, 7]
    assert data["codec"] == "int5"  # the default decision codec
    sizes = [splits[0]["bytes"]["webp"], *(s["bytes"]["int5"] for s in splits[1:])]
    assert data["candidates"] == natural_bottlenecks(sizes)
    assert data["candidates"] == [s["k"] for s in splits if s["candidate"]]
    assert ModelProfile.from_dict(data).n == 18


def test_codec_option_decides_the_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    data = _profile_json(capsys, "--codec", "int4")
    assert data["codec"] == "int4"
    splits = data["splits"]
    sizes = [splits[0]["bytes"]["webp"], *(s["bytes"]["int4"] for s in splits[1:])]
    assert data["candidates"] == natural_bottlenecks(sizes)


def test_table_marks_candidates(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    saved = tmp_path / "profile.json"
    args = ["profile", "--model", "resnet18", *QUICK, "--save", str(saved)]
    assert main(args) == 0
    table = capsys.readouterr().out
    profile = ModelProfile.load(saved)
    rows = {line.split()[0]: line for line in table.splitlines() if line[:3].strip().isdigit()}
    assert sorted(int(k) for k in rows) == list(range(profile.n + 1))
    for point in profile.splits:
        row = rows[str(point.k)]
        assert point.name in row and f"{profile.bytes_at(point.k, 'int8'):,}" in row
        assert row.rstrip().endswith("*") == point.candidate
    assert "candidates under int5" in table


def test_errors_are_reported_not_raised(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["profile", "--model", "resnet19"]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["profile", "--model", "resnet18", "--weights", "IMAGENET1K_V1"]) == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and "download.pytorch.org" in err
    with pytest.raises(SystemExit):
        main(["profile", "--images", "0"])
    with pytest.raises(SystemExit):
        main(["profile", "--codec", "jpeg"])
