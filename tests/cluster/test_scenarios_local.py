"""Shipped scenarios on the local backend, shortened: cheap runs of the whole path from
plan to verdict (the Ray backend runs one scenario in tests/cluster/ray/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.backends.local import LocalBackend
from cluster.experiment import ExperimentConfig, run_experiment
from faults.scenario import LIBRARY, Scenario

pytestmark = pytest.mark.slow


def shortened(name: str, duration: float, at: list[float], rate: int = 2000) -> Scenario:
    """A shipped scenario with a shorter run, its steps moved to `at` (in order)."""
    data: dict[str, Any] = yaml.safe_load((LIBRARY / f"{name}.yaml").read_text())
    data["duration"], data["load"]["rate"] = duration, rate
    assert len(at) == len(data["schedule"])
    data["schedule"] = [{**step, "at": t} for step, t in zip(data["schedule"], at, strict=True)]
    return Scenario.model_validate(data)


def _run(scenario: Scenario, out: Path) -> dict[str, Any]:
    result = run_experiment(
        ExperimentConfig.for_scenario(scenario), LocalBackend(), scenario=scenario, out_dir=out
    )
    assert result.scenario is not None
    assert result.scenario.ok, result.scenario.checks
    summary = result.summary()
    assert summary["backend"] == "local" and summary["scenario"]["pass"]
    return json.loads((out / "verdict.json").read_text())


def test_baseline_passes_every_check(tmp_path: Path) -> None:
    verdict = _run(shortened("baseline", 4, []), tmp_path)
    assert all(c["ok"] for c in verdict["checks"]) and verdict["ran"] == []


def test_one_crash_restarts_on_its_store_and_keeps_quorum(tmp_path: Path) -> None:
    verdict = _run(shortened("one-crash", 8, [2, 5]), tmp_path)
    assert [s["op"] for s in verdict["ran"]] == ["crash", "restart"]
    durable = {c["name"]: c for c in verdict["checks"]}["acked_batches_survive_restarts"]
    assert durable["ok"] and "(1 restarted)" in durable["evidence"]


def test_minority_partition_is_healed_and_quorum_never_pauses(tmp_path: Path) -> None:
    verdict = _run(shortened("minority-partition", 8, [2, 5]), tmp_path)
    assert [s["op"] for s in verdict["ran"]] == ["faults", "faults"]
    assert {c["name"]: c["ok"] for c in verdict["checks"]}["liveness"]


def test_impersonation_is_refused_by_the_libp2p_handshake(tmp_path: Path) -> None:
    verdict = _run(shortened("impersonation", 5, [2]), tmp_path)
    assert [s["op"] for s in verdict["ran"]] == ["impersonate"]
    assert verdict["impersonations"], verdict
