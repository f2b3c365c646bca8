"""Scenarios on a 4-machine lab: a partition with `network: kernel`, and a machine crash.

The driver joins the lab's Ray through Ray Client from the root namespace, one authority per
machine. The partition is real: the partitioned machine's nftables rules drop the workers'
packets (counters rise, a peer's connect times out instead of being refused), the verdict
matches the emulated run of the same scenario on the same lab, and quorum resumes after the
heal. The crash kills every process of one machine under load; it comes back (a new Ray
node) with its store, and every batch it acked is still there.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from cluster.backends.ray import RayBackend
from cluster.experiment import ExperimentConfig, QuietObserver, run_experiment
from cluster.lab import network
from cluster.lab.state import LabState
from faults.runner import ScenarioOutcome
from faults.scenario import Scenario
from tests.cluster.lab.conftest import MakeLab
from tests.cluster.lab.test_lab import probe
from worker.core.faults import FaultSettings

pytestmark = pytest.mark.slow

PARAMETERS = {
    "retry_initial_delay": 100,
    "retry_max_delay": 1000,
    "request_timeout": 2000,
    "post_quorum_delivery": 2000,
}


def scenario(name: str, schedule: list[dict[str, Any]], **changes: Any) -> Scenario:
    """Small and short: the lab runs 4 Ray nodes and 4 authorities on the box's cores."""
    return Scenario.model_validate(
        {
            "name": name,
            "seed": 4,
            "duration": 14,
            "transport": "tcp",
            "committee": {"authorities": 4, "workers": 1},
            "load": {"rate": 1500, "tx_size": 512},
            "parameters": PARAMETERS,
            "schedule": schedule,
            "expect": {"liveness": "continuous", "resume_within": 8},
            **changes,
        }
    )


#: how the runner announces a step: "  4.00s  faults      [0]  partition"
STEP = re.compile(r"^\s*[\d.]+s\s+\w+\s+\[[^\]]*\]\s+(.+)$")


class StepWatcher(QuietObserver):
    """Calls `hook(label)` as each scenario step is announced (just before it is carried out)."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)
        step = STEP.match(message)
        if step:
            self.hook(step.group(1))


def run(state: LabState, scn: Scenario, out: Path, hook: Any = None) -> tuple[Any, RayBackend]:
    backend = RayBackend(lab=state.plan.state_dir)
    cfg = ExperimentConfig.for_scenario(scn)
    cfg.startup_timeout = 120.0
    observer = StepWatcher(hook or (lambda label: None))
    return run_experiment(cfg, backend, observer, scenario=scn, out_dir=out), backend


def checks(outcome: ScenarioOutcome | None) -> dict[str, bool]:
    assert outcome is not None
    return {c["name"]: c["ok"] for c in outcome.checks}


def test_a_kernel_partition_drops_packets_and_matches_the_emulated_verdict(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    state = make_lab(4)
    schedule = [
        {"at": 3, "action": "partition", "targets": [0]},
        {"at": 8, "action": "clear"},
    ]
    seen: dict[str, Any] = {}
    partitioned, healed = threading.Event(), threading.Event()
    kernel_backend = RayBackend(lab=state.plan.state_dir)
    set_network = kernel_backend.set_network

    def observed(index: int, settings: FaultSettings) -> None:  # called on authority 0's lane
        set_network(index, settings)
        if index == 0:
            (partitioned if settings.blocked else healed).set()

    kernel_backend.set_network = observed  # type: ignore[method-assign]

    def look() -> None:
        """Look at the partition in the kernel while it is in force, on a thread of its own:
        a probe takes seconds, and the scenario's schedule must not wait for it."""
        assert partitioned.wait(120), "the partition never reached the kernel"
        assert kernel_backend.lab is not None and kernel_backend.committee is not None
        (victim,) = kernel_backend.lab.machines[0]
        c = kernel_backend.committee
        slot = c.workers_of(c.authorities[0].name)[0]
        port = int(slot.addresses["worker_to_worker"].rpartition(":")[2])
        (peer,) = kernel_backend.lab.machines[1]
        seen["probe"] = probe(state, peer, victim, port)
        seen["dropped"] = kernel_backend.lab.kernel.dropped(victim)
        seen["healed_meanwhile"] = healed.is_set()

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    kernel = scenario("kernel-partition", schedule, network="kernel")
    cfg = ExperimentConfig.for_scenario(kernel)
    cfg.startup_timeout = 120.0
    result = run_experiment(
        cfg, kernel_backend, QuietObserver(), scenario=kernel, out_dir=tmp_path / "k"
    )
    looker.join(60)
    assert not result.problems, result.problems
    assert seen.get("healed_meanwhile") is False, f"the look came too late: {seen}"
    assert seen["dropped"] > 0, "no packet was dropped in the partitioned machine's kernel"
    assert seen["probe"] == "timeout", f"a peer's connect met {seen['probe']!r}, not silence"
    kernel_checks = checks(result.scenario)
    assert result.scenario is not None and result.scenario.ok, result.scenario.verdict
    assert kernel_checks["liveness"]  # quorum never paused, and resumed after the heal

    emulated_result, _ = run(state, scenario("emulated-partition", schedule), tmp_path / "emu")
    assert checks(emulated_result.scenario) == kernel_checks


def test_b_a_machine_crash_under_load_keeps_quorum_and_the_stores(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    state = make_lab(4)
    schedule = [
        {"at": 3, "action": "crash", "targets": [0], "machine": True, "id": "victim"},
        {"at": 8, "action": "restart", "targets": "ref victim"},
    ]
    seen: dict[str, Any] = {}
    backend_box: list[RayBackend] = []

    def during(label: str) -> None:
        backend = backend_box[0]
        assert backend.lab is not None and backend.committee is not None
        (victim,) = backend.lab.machines[0]
        if label == "machine crash":
            auth = backend.committee.authorities[0]
            seen["name"], seen["node"] = auth.name, auth.node
        elif label == "restart":  # the machine is down: not one of its processes is left
            seen["pids"] = network.namespace_pids(state.plan.machine(victim).netns)

    backend = RayBackend(lab=state.plan.state_dir)
    backend_box.append(backend)
    scn = scenario("machine-crash", schedule)
    cfg = ExperimentConfig.for_scenario(scn)
    cfg.startup_timeout = 120.0
    result = run_experiment(cfg, backend, StepWatcher(during), scenario=scn, out_dir=tmp_path)
    assert not result.problems, result.problems
    assert seen["pids"] == []
    got = checks(result.scenario)
    # What a machine crash must not break. (Not `acked_batches_reported`: a worker acks once
    # its report is queued, so a report still queued when its machine dies is lost.)
    for name in (
        "quorum_acks",
        "stored_at_f_plus_1_honest",
        "stored_content_matches_digest",
        "acked_batches_survive_restarts",
        "liveness",
    ):
        assert got[name], (name, result.scenario.checks if result.scenario else None)
    home = result.homes[seen["name"]]
    assert home["ray_node_ip"] == seen["node"].ip  # same machine...
    assert home["ray_node_id"] != seen["node"].node_id  # ...as a new Ray node
