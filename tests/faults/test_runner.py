"""The scenario runner over a fake committee and a fake clock: steps run when due, in
order, crashed authorities come back after the load, and the verdict is written."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from faults.runner import ScenarioRunner, scenario_parameters
from faults.scenario import Scenario, ScenarioError
from worker.core.faults import FaultSettings

NAMES = ["a", "b", "c", "d"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRun:
    """Records what the plan asked for; every authority stores and reports one batch."""

    def __init__(self, on_lab: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.on_lab = on_lab

    def crash(self, index: int) -> None:
        self.calls.append(("crash", index))

    def crash_machine(self, index: int) -> None:
        self.calls.append(("crash_machine", index))

    def set_network(self, index: int, settings: FaultSettings) -> None:
        self.calls.append(("network", index, settings))

    def restart(self, index: int) -> None:
        self.calls.append(("restart", index))

    def set_faults(self, index: int, settings: FaultSettings) -> None:
        self.calls.append(("faults", index, settings))

    def impersonate(self, index: int, victim: int) -> None:
        self.calls.append(("impersonate", index, victim))

    def impersonations(self) -> list[dict[str, Any]]:
        return [{"by": "a/w0", "acked": 0}]

    def evidence(self) -> list[dict[str, Any]]:
        record = {"digest": "aa", "quorum_at": 1000.5, "sealed_at": 1000.4, "acked_by": NAMES[1:3]}
        return [
            {
                "authority": name,
                "worker_id": 0,
                "records": [{**record, "transactions": 10, "stake": 3}] if name == "a" else [],
                "stored": {"aa": True},
                "sent": ["aa"] if name == "a" else [],
            }
            for name in NAMES
        ]


SCHEDULE = [
    {"at": 1, "action": "crash", "targets": [3]},
    {"at": 2, "action": "partition", "targets": [0]},
    {"at": 3, "action": "impersonate", "targets": [1], "as_authority": 2},
]


def _scenario(schedule: list[dict[str, Any]] = SCHEDULE, **changes: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "t",
            "duration": 4,
            "transport": "tcp",
            "schedule": schedule,
            "expect": {"liveness": "any"},
            **changes,
        }
    )


def test_steps_run_when_due_and_crashed_authorities_come_back(tmp_path: Path) -> None:
    clock, run = FakeClock(), FakeRun()
    runner = ScenarioRunner(_scenario(), NAMES, run, clock=clock, note=lambda _: None)
    runner.begin()
    assert runner.run_due() == 1.0 and run.calls == []  # next step in 1 s
    clock.now += 1.0
    assert runner.run_due() == 1.0 and runner.settle() and run.calls == [("crash", 3)]
    clock.now += 1.5
    assert runner.run_due() == 0.5 and runner.settle()
    pushed = {c[1]: c[2] for c in run.calls if c[0] == "faults"}
    assert set(pushed) == {0, 1, 2}  # the crashed authority is not told
    assert pushed[0].blocked == {"b", "c", "d"} and pushed[1].blocked == {"a"}
    clock.now += 0.5
    assert runner.run_due() is None and runner.settle() and run.calls[-1] == ("impersonate", 1, 2)
    assert [r["planned_at"] for r in runner.ran] == [1, 2, 3]
    runner.load_ended()
    assert run.calls[-1] == ("restart", 3) and not runner.crashed

    outcome = runner.judge({n: {"others": {"0": ["aa"]}} for n in NAMES[1:]}, tmp_path)
    assert outcome.ok, outcome.verdict
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["byzantine"] == ["b"] and verdict["impersonations"][0]["by"] == "a/w0"
    assert [s["op"] for s in verdict["ran"]] == ["crash", "faults", "impersonate"]


def test_a_transport_given_on_the_command_line_wins() -> None:
    scenario = _scenario()
    assert scenario_parameters(scenario).transport == "tcp"
    assert scenario_parameters(scenario, "libp2p").transport == "libp2p"


def _lab_scenario() -> Scenario:
    schedule = [
        {"at": 1, "action": "crash", "targets": [3], "machine": True},
        {"at": 2, "action": "link", "targets": [0], "fault": {"delay": 0.1, "loss": 0.5}},
    ]
    return _scenario(schedule, network="kernel")


def test_lab_scenarios_refuse_a_committee_off_a_lab() -> None:
    with pytest.raises(ScenarioError, match="only on a lab") as refused:
        ScenarioRunner(_lab_scenario(), NAMES, FakeRun(), note=lambda _: None)
    assert refused.value.reason == "lab_required"


def test_kernel_network_faults_go_to_the_kernel_and_delay_to_the_transport() -> None:
    clock, run = FakeClock(), FakeRun(on_lab=True)
    runner = ScenarioRunner(_lab_scenario(), NAMES, run, clock=clock, note=lambda _: None)
    runner.begin()
    clock.now += 2.0
    assert runner.run_due() is None and runner.settle()
    # authority 3's lane and authority 0's run at once: their calls come in either order
    assert ("crash_machine", 3) in run.calls
    (network,) = [c for c in run.calls if c[0] == "network"]
    (faults,) = [c for c in run.calls if c[0] == "faults"]
    assert network[1] == faults[1] == 0
    assert network[2].links["*"].loss == 0.5 and network[2].links["*"].delay == 0
    assert faults[2].links["*"].delay == 0.1 and faults[2].links["*"].loss == 0
    runner.load_ended()
    assert run.calls[-1] == ("restart", 3)


class SlowRestart(FakeRun):
    """A restart that holds its lane until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.restarting = threading.Event()
        self.release = threading.Event()
        self.faults_applied = threading.Event()

    def restart(self, index: int) -> None:
        self.restarting.set()
        assert self.release.wait(30), "the test never released the restart"
        super().restart(index)

    def set_faults(self, index: int, settings: FaultSettings) -> None:
        super().set_faults(index, settings)
        self.faults_applied.set()


def _slow_restart_then(target: int) -> list[dict[str, Any]]:
    return [
        {"at": 1, "action": "crash", "targets": [0]},
        {"at": 2, "action": "restart", "targets": [0]},
        {"at": 3, "action": "byzantine", "targets": [target], "behaviour": {"silent": True}},
    ]


def test_a_restart_in_progress_holds_up_no_other_authority(tmp_path: Path) -> None:
    clock, run = FakeClock(), SlowRestart()
    runner = ScenarioRunner(_scenario(_slow_restart_then(2)), NAMES, run, clock, lambda _: None)
    runner.begin()
    clock.now += 1.0
    runner.run_due()
    assert runner.settle()  # the crash at 1 s (the fake clock stands still meanwhile)
    clock.now += 1.0
    runner.run_due()
    assert run.restarting.wait(30)
    clock.now += 1.0
    assert runner.run_due() is None  # issued while the restart still holds its lane
    assert run.faults_applied.wait(30), "authority 2's step waited for authority 0's restart"
    assert ("restart", 0) not in run.calls
    run.release.set()
    runner.load_ended()
    started = {r["op"]: r["started"] for r in runner.ran}
    assert started["faults"] == {"2": 3.0} and started["restart"] == {"0": 2.0}
    assert runner.schedule()["max_late_s"] == 0.0
    outcome = runner.judge({n: {"others": {"0": ["aa"]}} for n in NAMES[1:]}, tmp_path)
    assert {c["name"]: c["ok"] for c in outcome.checks}["schedule"]


def test_a_step_that_started_late_makes_the_run_untrusted(tmp_path: Path) -> None:
    clock, run = FakeClock(), SlowRestart()
    runner = ScenarioRunner(_scenario(_slow_restart_then(0)), NAMES, run, clock, lambda _: None)
    runner.begin()
    clock.now += 1.0
    runner.run_due()
    assert runner.settle()  # the crash at 1 s (the fake clock stands still meanwhile)
    clock.now += 1.0
    runner.run_due()
    assert run.restarting.wait(30)
    clock.now += 1.0
    runner.run_due()  # authority 0's fault settings queue behind its own restart
    clock.now += 1.5  # the restart ends 2.5 s after its plan time, 1.5 s after the next step's
    run.release.set()
    runner.load_ended()
    assert runner.schedule()["max_late_s"] == 1.5
    outcome = runner.judge({n: {"others": {"0": ["aa"]}} for n in NAMES[1:]}, tmp_path)
    assert not outcome.ok and outcome.verdict.startswith("untrusted")
    (late,) = [c for c in outcome.checks if c["name"] == "schedule"]
    assert late["examples"] == [
        "faults (byzantine {'silent': True}) of 0 started at 4.50s, planned at 3s"
    ]


def test_a_failed_action_fails_the_run_at_the_next_look() -> None:
    class Broken(FakeRun):
        def crash(self, index: int) -> None:
            raise OSError("no such process")

    clock, run = FakeClock(), Broken()
    runner = ScenarioRunner(_scenario(), NAMES, run, clock=clock, note=lambda _: None)
    runner.begin()
    clock.now += 1.0
    runner.run_due()
    assert runner.settle()
    with pytest.raises(RuntimeError, match="crash of authority 3 failed: OSError"):
        runner.run_due()
