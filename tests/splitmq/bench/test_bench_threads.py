"""`splitmq bench threads` times both settings on the real model and restores torch's threads."""

from __future__ import annotations

import json

import torch

from splitmq.cli import main


def test_it_times_one_thread_and_the_default_and_restores_the_default(capsys) -> None:
    before = torch.get_num_threads()
    argv = ["bench", "threads", "--rounds", "2", "--calls", "2", "--pace-ms", "0", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["one_thread"]["count"] == 4 and report["default"]["count"] == 4
    assert report["default_threads"] == before
    assert report["one_thread"]["p50_ms"] > 0 and report["default_over_one"] > 0
    assert torch.get_num_threads() == before
