"""Shipped scenarios on the local backend, shortened: cheap runs of the whole path from
plan to verdict (the Ray backend runs one scenario in tests/cluster/ray/)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.backends.local import LocalBackend
from cluster.experiment import ExperimentConfig, run_experiment
from cluster.results import RunResult
from faults.scenario import LIBRARY, Scenario
from worker.core.faults import FaultSettings

pytestmark = pytest.mark.slow


def shortened(name: str, duration: float, at: list[float], rate: int = 2000) -> Scenario:
    """A shipped scenario with a shorter run, its steps moved to `at` (in order)."""
    data: dict[str, Any] = yaml.safe_load((LIBRARY / f"{name}.yaml").read_text())
    data["duration"], data["load"]["rate"] = duration, rate
    assert len(at) == len(data["schedule"])
    data["schedule"] = [{**step, "at": t} for step, t in zip(data["schedule"], at, strict=True)]
    return Scenario.model_validate(data)


def _run(scenario: Scenario, out: Path, results: list[RunResult] | None = None) -> dict[str, Any]:
    result = run_experiment(
        ExperimentConfig.for_scenario(scenario), LocalBackend(), scenario=scenario, out_dir=out
    )
    assert result.scenario is not None
    assert result.scenario.ok, result.scenario.checks
    summary = result.summary()
    assert summary["backend"] == "local" and summary["scenario"]["pass"]
    if results is not None:
        results.append(result)
    return json.loads((out / "verdict.json").read_text())


def test_baseline_passes_every_check(tmp_path: Path) -> None:
    verdict = _run(shortened("baseline", 4, []), tmp_path)
    assert all(c["ok"] for c in verdict["checks"]) and verdict["ran"] == []


def test_one_crash_restarts_on_its_store_and_keeps_quorum(tmp_path: Path) -> None:
    results: list[RunResult] = []
    verdict = _run(shortened("one-crash", 8, [2, 5]), tmp_path, results)
    assert [s["op"] for s in verdict["ran"]] == ["crash", "restart"]
    durable = {c["name"]: c for c in verdict["checks"]}["acked_batches_survive_restarts"]
    assert durable["ok"] and "(1 restarted)" in durable["evidence"]
    # The victim's quorum records from before its crash (in memory only) were kept.
    crash_at = verdict["ran"][0]["started"][str(verdict["ran"][0]["targets"][0])]
    (victim,) = [w for w in results[0].workers if w["crashes"] == 1]
    start = min(c["started_at"] for c in results[0].clients)
    assert any(r["quorum_at"] - start < crash_at for r in victim["records"])


def test_minority_partition_is_healed_and_quorum_never_pauses(tmp_path: Path) -> None:
    verdict = _run(shortened("minority-partition", 8, [2, 5]), tmp_path)
    assert [s["op"] for s in verdict["ran"]] == ["faults", "faults"]
    assert {c["name"]: c["ok"] for c in verdict["checks"]}["liveness"]


def test_impersonation_is_refused_by_the_libp2p_handshake(tmp_path: Path) -> None:
    verdict = _run(shortened("impersonation", 5, [2]), tmp_path)
    assert [s["op"] for s in verdict["ran"]] == ["impersonate"]
    assert verdict["impersonations"], verdict


class HeldRestart(LocalBackend):
    """A restart that cannot finish before the next step, on another authority, started:
    were steps carried out one after another, this run would never get past it."""

    def __init__(self) -> None:
        super().__init__()
        self.next_step = threading.Event()

    def restart(self, index: int) -> None:
        if not self.next_step.wait(30):
            raise AssertionError("the step after the restart waited for the restart")
        super().restart(index)

    def set_faults(self, index: int, settings: FaultSettings) -> None:
        super().set_faults(index, settings)
        self.next_step.set()


def test_a_restart_holds_up_no_later_step(tmp_path: Path) -> None:
    schedule = [
        {"at": 1, "action": "crash", "targets": [0]},
        {"at": 2, "action": "restart", "targets": [0]},
        {"at": 3, "action": "link", "targets": [1], "fault": {"delay": 0.01}},
    ]
    data: dict[str, Any] = yaml.safe_load((LIBRARY / "one-crash.yaml").read_text())
    scenario = Scenario.model_validate(
        {**data, "duration": 6, "load": {"rate": 2000, "tx_size": 512}, "schedule": schedule}
    )
    cfg = ExperimentConfig.for_scenario(scenario)
    result = run_experiment(cfg, HeldRestart(), scenario=scenario, out_dir=tmp_path)
    assert result.scenario is not None and result.scenario.ok, result.scenario.checks
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    restart, link = verdict["ran"][1:]
    assert link["ended"]["1"] <= restart["ended"]["0"]  # the link step ran during the restart
    assert {c["name"]: c["ok"] for c in verdict["checks"]}["schedule"]
    assert verdict["schedule"]["max_late_s"] <= verdict["schedule"]["limit_s"]


class RecordedTargets(LocalBackend):
    """Notes the workers' metrics addresses before its first step and after each restart."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[set[str]] = []

    def crash(self, index: int) -> None:
        self.seen.append({t.address for t in self.metrics_targets()})
        super().crash(index)

    def restart(self, index: int) -> None:
        super().restart(index)
        self.seen.append({t.address for t in self.metrics_targets()})


def test_prometheus_targets_follow_a_restarted_worker(tmp_path: Path) -> None:
    scenario = shortened("one-crash", 6, [2, 3])
    targets = tmp_path / "targets.json"
    cfg = ExperimentConfig.for_scenario(scenario)
    cfg.targets_file = targets
    backend = RecordedTargets()
    result = run_experiment(cfg, backend, scenario=scenario, out_dir=tmp_path / "out")
    assert result.scenario is not None and result.scenario.ok
    before, after = backend.seen
    assert before != after  # the restarted worker listens elsewhere now
    assert {g["targets"][0] for g in json.loads(targets.read_text())} == after
