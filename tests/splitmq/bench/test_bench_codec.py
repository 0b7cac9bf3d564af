"""`splitmq bench codec`: every codec at the candidate splits, on real inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from splitmq.cli import main

torch.set_num_threads(min(2, torch.get_num_threads()))

CODECS = {"lossless", "fp16", "int8", "int5", "int4"}


@pytest.mark.slow
def test_bench_writes_the_contracted_json_and_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out" / "bench-codec.json"
    assert main(["bench", "codec", "--json", str(path), "--inputs", "6", "--batch", "4"]) == 0
    result = json.loads(path.read_text())
    assert result["model"] == "efficientnet-lite0" and result["inputs"] == 6
    assert set(result["codecs"]) == CODECS
    assert result["jpeg_bytes"] == result["jpeg"]["bytes"] > 0
    measured = None
    for codec, entry in result["codecs"].items():
        assert entry["lossless"] is (codec == "lossless")
        assert entry["candidates"][0] == 0 and entry["candidates"][-1] == 18
        measured = measured or set(entry["splits"])
        assert set(entry["splits"]) == measured  # every codec at the same splits
        for k, summary in entry["splits"].items():
            assert set(summary) >= {"bytes", "encode_ms", "decode_ms", "top1_agreement"}
            assert summary["candidate"] == (int(k) in entry["candidates"])
            assert 0.0 <= summary["top1_agreement"] <= 1.0
            assert summary["encode_ms"] > 0 and summary["decode_ms"] > 0
    assert measured, "no candidate split besides 0 and n under any codec"
    # every split measured is some codec's candidate, and every such candidate is measured
    inner = {k for e in result["codecs"].values() for k in e["candidates"] if 0 < k < 18}
    assert {int(k) for k in measured} == inner
    for k in measured:
        lossless = result["codecs"]["lossless"]["splits"][k]
        assert lossless["top1_agreement"] == 1.0  # bit-exact tensors give the same answer
        sizes = [
            result["codecs"][c]["splits"][k]["bytes"] for c in ("lossless", "fp16", "int8", "int5")
        ]
        assert sizes == sorted(sizes, reverse=True)
    table = capsys.readouterr().out
    assert "jpeg" in table and "int4" in table and str(path) in table
    assert len([line for line in table.splitlines() if line.startswith("int8")]) == len(measured)


def test_bench_reports_bad_codecs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.json"
    assert main(["bench", "codec", "--json", str(path), "--inputs", "2", "--codecs", "zfp"]) == 2
    assert "codecs must be among" in capsys.readouterr().err
    assert not path.exists()
