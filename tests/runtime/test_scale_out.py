"""Scale-out on standard MQTT: workers share a split through `$share`, a worker may serve only
some splits, and the device can prefer the less loaded of several live workers."""

from __future__ import annotations

import pytest

from broker.client import BrokerSettings
from edge_worker.worker import EdgeWorker
from tests.runtime.test_worker import worker_config
from tests.runtime.worker_clients import Requester, echo_frame

pytestmark = pytest.mark.integration


def test_two_workers_share_a_split_and_one_serves_only_a_subset(
    broker_settings: BrokerSettings, requester: Requester
) -> None:
    both = worker_config(
        broker_settings, worker_id="both", models=[{"name": "echo"}], runner="echo"
    )
    subset = worker_config(
        broker_settings,
        worker_id="only-0",
        models=[{"name": "echo", "splits": [0]}],
        runner="echo",
    )
    with EdgeWorker(both), EdgeWorker(subset) as narrow:
        assert narrow.link.subscriptions == ["$share/splitmq-workers/splitmq/req/echo/0"], (
            "a worker subscribes to the splits it serves, no others"
        )
        shared = [f"shared-{i}" for i in range(40)]
        alone = [f"alone-{i}" for i in range(20)]
        for rid in shared:
            requester.send("echo", 0, echo_frame(rid, split=0), rid)
        for rid in alone:
            requester.send("echo", 1, echo_frame(rid, split=1), rid)
        shared_results = requester.wait(shared)
        alone_results = requester.wait(alone)
    assert all(r.status == "ok" for r in [*shared_results, *alone_results])
    assert {r.worker_id for r in shared_results} == {"both", "only-0"}, "split 0 is shared"
    assert {r.worker_id for r in alone_results} == {"both"}, "only one worker serves split 1"
    assert len(requester.correlations) == len(shared) + len(alone)  # each answered once
