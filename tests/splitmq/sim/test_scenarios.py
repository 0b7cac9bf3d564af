"""Server-load scenarios: shapes, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from splitmq.sim.scenarios import HEAVY, LIGHT, LOAD_STEP_S, STEADY, ScenarioError, make_load


def test_idle_has_no_background_at_all():
    load = make_load("idle", 60.0)
    assert load.at(10.0) == (0, 0)
    assert not load.heavy.any()


def test_steady_fluctuates_around_its_mean():
    load = make_load("steady", 2000.0, seed=1)
    assert set(load.batch.tolist()) == {STEADY.batch}
    assert load.queue.mean() == pytest.approx(STEADY.mean_queue, rel=0.15)
    assert load.queue.std() > 0.1 * STEADY.mean_queue  # it does move


def test_switching_alternates_light_and_heavy_every_few_tens_of_seconds():
    load = make_load("switching", 600.0, seed=2)
    assert set(load.batch.tolist()) == {LIGHT.batch, HEAVY.batch}
    edges = np.flatnonzero(np.diff(load.heavy.astype(int))) + 1
    lengths = np.diff(edges) * LOAD_STEP_S
    assert len(edges) >= 10
    assert lengths.min() >= 19.9 and lengths.max() <= 40.1
    assert load.queue[load.heavy].mean() > 20 * load.queue[~load.heavy].mean()


def test_scenarios_are_deterministic_per_seed():
    a, b = make_load("switching", 100.0, seed=3), make_load("switching", 100.0, seed=3)
    assert np.array_equal(a.queue, b.queue)
    assert not np.array_equal(a.queue, make_load("switching", 100.0, seed=4).queue)


def test_time_past_the_end_holds_the_last_state():
    load = make_load("steady", 10.0)
    assert load.at(1e6) == (int(load.batch[-1]), int(load.queue[-1]))


def test_unknown_scenario_names_the_choices():
    with pytest.raises(ScenarioError, match="idle, steady, switching"):
        make_load("bursty", 10.0)
    with pytest.raises(ScenarioError):
        make_load("idle", 0.0)
