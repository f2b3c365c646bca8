"""`narwhal-testbed run --scenario FILE`: a scenario on a Ray committee, then its report.

The plan (sans-IO, cluster/scenario_plan.py) says what happens when; this module only
carries it out: crashes are `ray.kill`s of the workers' actors, restarts are fresh
actors on the same node with the same store and keys, faults are pushed to the
workers as whole `FaultSettings`. After the load, crashed workers are brought back
to read their stores, the committee drains, and the checker judges the evidence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from cluster.ray.client_actor import LoadClientActor
from cluster.ray.committee import RayCommittee, WorkerSlot, get_within
from cluster.ray.connect import connect
from cluster.ray.load import per_client_rate
from cluster.ray.placement import alive_nodes, pinned, plan_placement
from faults.checker import Evidence, WorkerEvidence, check_all, verdict
from faults.plan import PlanRunner, Step, resolve
from faults.report import write_report
from faults.scenario import Scenario
from worker.config import Parameters

log = logging.getLogger(__name__)
CALL_TIMEOUT = 60.0


@dataclass
class ScenarioOutcome:
    ok: bool
    verdict: str
    out_dir: Path
    checks: list[dict[str, Any]]


def scenario_parameters(scenario: Scenario) -> Parameters:
    values = dict(scenario.parameters)
    if scenario.transport:
        values["transport"] = scenario.transport
    return Parameters.model_validate(values)


class _Executor:
    """Carries out plan steps on the Ray committee."""

    def __init__(self, committee: RayCommittee, names: list[str]) -> None:
        self.c, self.names = committee, names
        self.crashed: set[str] = set()
        self.impersonations: list[dict[str, Any]] = []

    def slots(self, index: int) -> list[WorkerSlot]:
        return [s for s in self.c.workers if s.authority == self.names[index]]

    def apply(self, step: Step) -> None:
        match step.op:
            case "crash":
                for i in step.targets:
                    for slot in self.slots(i):
                        if slot.actor is not None:
                            self.c.kill_worker(slot.authority, slot.worker_id)
                    self.crashed.add(self.names[i])
            case "restart":
                for i in step.targets:
                    self.restart(self.names[i])
            case "faults":
                refs = [
                    slot.actor.set_faults.remote(settings.model_dump_json())
                    for i, settings in step.settings.items()
                    for slot in self.slots(i)
                    if slot.actor is not None
                ]
                get_within(refs, CALL_TIMEOUT, f"applying {step.label}")
            case "impersonate":
                assert step.as_authority is not None
                victim = self.names[step.as_authority]
                for i in step.targets:
                    for slot in self.slots(i):
                        peers = {
                            p.authority: p.info["worker_to_worker"]
                            for p in self.c.workers
                            if p.worker_id == slot.worker_id and p.info
                        }
                        ref = slot.actor.impersonate.remote(victim, peers)
                        self.impersonations.append({"by": slot.label, "ref": ref})

    def restart(self, name: str) -> None:
        if name in self.crashed:
            for slot in self.c.workers:
                if slot.authority == name and slot.actor is None:
                    self.c.restart_worker(slot.authority, slot.worker_id, CALL_TIMEOUT)
            self.crashed.discard(name)


def _start_clients(committee: RayCommittee, rate: int, tx_size: int, duration: float):
    slots = committee.live_workers
    actors = [
        ray.remote(LoadClientActor).options(num_cpus=0, scheduling_strategy=pinned(s.node)).remote()
        for s in slots
    ]
    get_within([a.ready.remote() for a in actors], CALL_TIMEOUT, "starting the clients")
    refs = [a.run.remote(s.info["transactions"], rate, tx_size, duration)
            for a, s in zip(actors, slots, strict=True)]  # fmt: skip
    return actors, refs


def _evidence(
    committee: RayCommittee, names: list[str], steps: list[Step], start: float, end: float,
    byzantine: set[str],
) -> tuple[Evidence, list[dict[str, Any]]]:  # fmt: skip
    slots = [s for s in committee.workers if s.actor is not None]
    # Reports first, stores second: a digest is stored before it is reported, so every
    # reported digest is in a store read afterwards, even while late batches arrive.
    _, collectors = committee.collect(CALL_TIMEOUT)
    raw = get_within([s.actor.evidence.remote() for s in slots], CALL_TIMEOUT, "evidence")
    workers = [
        WorkerEvidence(e["authority"], e["worker_id"], e["records"], e["stored"], set(e["sent"]))
        for e in raw
    ]
    reported = {
        name: {d for ds in c["digests"]["others"].values() for d in ds}
        for name, c in collectors.items()
    }
    # An impostor's batches never enter `sent`: stored anywhere, they are outsiders.
    ev = Evidence(names, {n: 1 for n in names}, workers, reported, steps, start, end, byzantine)
    return ev, raw


def run_scenario(
    scenario: Scenario,
    results_root: Path = Path("results"),
    address: str | None = None,
    num_cpus: int | None = None,
    note: Callable[[str], None] = print,
) -> ScenarioOutcome:
    params = scenario_parameters(scenario)
    n, w = scenario.committee.nodes, scenario.committee.workers
    connected = connect(address, num_cpus)
    committee: RayCommittee | None = None
    try:
        placement = plan_placement(alive_nodes(), n, w)
        if placement.note:
            note(f"note: {placement.note}")
        committee = RayCommittee(n, w, params, placement=placement)
        committee.deploy(CALL_TIMEOUT * 2)
        names = [a.name for a in committee.authorities]
        steps = resolve(scenario, names)
        note(f"{scenario.name}: {n} authorities x {w} over {params.transport}, seed "
             f"{scenario.seed}, {len(steps)} planned steps")  # fmt: skip
        executor = _Executor(committee, names)
        rate = per_client_rate(scenario.load.rate, n, w)
        actors, refs = _start_clients(committee, rate, scenario.load.tx_size, scenario.duration)
        start, runner, ran = time.time(), PlanRunner(steps), []
        pending = list(refs)
        while pending or runner.next_at() is not None:
            elapsed = time.time() - start
            for step in runner.due(elapsed):
                note(f"  {elapsed:6.2f}s  {step.op:<11} {list(step.targets)}  {step.label}")
                executor.apply(step)
                ran.append({"planned_at": step.at, "ran_at": round(elapsed, 3), **step.to_json()})
            nxt = runner.next_at()
            wait = 0.5 if nxt is None else max(0.0, min(0.5, nxt - (time.time() - start)))
            if pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=wait)
            else:
                time.sleep(wait)
        clients = ray.get(refs)
        end = time.time()
        for actor in actors:
            ray.kill(actor, no_restart=True)
        for name in list(executor.crashed):  # bring them back to read their stores
            executor.restart(name)
        drained = committee.drain(10.0)
        impostors = [get_within(i["ref"], CALL_TIMEOUT, "impersonation")
                     for i in executor.impersonations]  # fmt: skip
        byzantine = {names[i] for s in steps if s.op in ("impersonate",) for i in s.targets}
        byzantine |= {
            names[i] for s in steps if s.op == "faults"
            for i, st in s.settings.items() if st.byzantine != type(st.byzantine)()
        }  # fmt: skip
        ev, raw = _evidence(committee, names, steps, start, end, byzantine)
        results = check_all(ev, scenario.expect)
        outcome = verdict(results, scenario.expect)
        honest_records = [r for e in raw if e["authority"] not in byzantine for r in e["records"]]
        out = results_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{scenario.name}"
        write_report(out, scenario, names, steps, honest_records, start, results, outcome,
                     extra={"ran": ran, "drained": drained, "impersonations": impostors,
                            "clients": [{k: v for k, v in c.items() if k != "samples"}
                                        for c in clients],
                            "byzantine": sorted(byzantine)})  # fmt: skip
        return ScenarioOutcome(outcome[0], outcome[1], out, [r.to_json() for r in results])
    finally:
        if committee is not None:
            committee.stop(remove_stores=True)
        if connected:
            ray.shutdown()
