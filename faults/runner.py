"""Carrying out a scenario's plan on a running committee, then judging what it left.

The runner knows nothing of processes or Ray: the experiment flow (cluster/experiment.py)
owns the committee and hands the runner a `ScenarioRun`, what its backend can do to an
authority. The flow calls `begin` as the load starts, `run_due` from its load loop (it
returns how long the flow may wait before the next step is due), `load_ended` after the
load (crashed authorities come back to read their stores), and `judge` once the
committee drained and its collectors were read.

`run_due` only issues the due steps: each authority's actions run on its own lane
(faults/lanes.py), so a restart that takes seconds holds up nothing but later actions on
that same authority. Every action's start is recorded against its planned time, and the
verdict fails (`schedule`) if one started more than MAX_LATE s late. The backend's
`ScenarioRun` methods are therefore called from several threads at once, one per
authority; a backend must allow that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from faults.checker import (
    Evidence,
    WorkerEvidence,
    check_all,
    check_schedule,
    start_delays,
    verdict,
)
from faults.lanes import Lanes
from faults.plan import PlanRunner, Step, resolve, split_network
from faults.report import write_report
from faults.scenario import Scenario, ScenarioError, needs_lab
from worker.config import Parameters
from worker.core.faults import Byzantine, FaultSettings

Clock = Callable[[], float]
#: A step whose action starts later than this after its planned time fails the run: the
#: checker judges liveness by the plan's times, which such a run did not keep.
MAX_LATE = 1.0


class ScenarioRun(Protocol):
    """What a running committee offers the plan; authorities by index, in committee order.

    Calls for different authorities come from different threads at once (one lane per
    authority); calls for one authority come one at a time, in plan order."""

    #: whether the committee runs on a lab: `set_network` and `crash_machine` work
    on_lab: bool

    def crash(self, index: int) -> None:
        """Kill the authority's workers abruptly (no graceful stop)."""

    def crash_machine(self, index: int) -> None:
        """Kill every process of the authority's lab machine(s) (Ray node, all actors)."""

    def restart(self, index: int) -> None:
        """Bring a crashed authority (or its crashed machine) back on the same stores and
        keys, rediscovered."""

    def set_faults(self, index: int, settings: FaultSettings) -> None:
        """Replace the fault settings of every worker of the authority."""

    def set_network(self, index: int, settings: FaultSettings) -> None:
        """Replace the kernel network faults of the authority's machine(s): partitions
        (`blocked`), loss and bandwidth caps of `settings.links` (`network: kernel`)."""

    def impersonate(self, index: int, victim: int) -> None:
        """Start an impostor host of `index` claiming `victim`; see `impersonations`."""

    def impersonations(self) -> list[dict[str, Any]]:
        """Wait for every impostor started and return what each achieved."""

    def evidence(self) -> list[dict[str, Any]]:
        """`Worker.evidence()` of every running worker (read after the collectors)."""


@dataclass
class ScenarioOutcome:
    name: str
    ok: bool
    verdict: str
    out_dir: Path
    checks: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pass": self.ok,
            "verdict": self.verdict,
            "report": str(self.out_dir),
            "checks": self.checks,
        }


def scenario_parameters(scenario: Scenario, transport: str | None = None) -> Parameters:
    """The scenario's parameters; `transport` (a command-line override) wins over its own."""
    values = dict(scenario.parameters)
    if transport or scenario.transport:
        values["transport"] = transport or scenario.transport
    return Parameters.model_validate(values)


class ScenarioRunner:
    def __init__(
        self,
        scenario: Scenario,
        names: list[str],
        run: ScenarioRun,
        clock: Clock = time.time,
        note: Callable[[str], None] = print,
    ) -> None:
        why = needs_lab(scenario)
        if why is not None and not run.on_lab:
            raise ScenarioError(
                "lab_required",
                f"scenario {scenario.name} has {why}: it runs only on a lab (the Ray backend "
                "joined to a lab: NARWHAL_LAB=STATE_DIR, see docs/lab.md)",
            )
        self.scenario, self.names, self.run = scenario, names, run
        self.clock, self.note = clock, note
        self.steps = resolve(scenario, names)
        self._plan = PlanRunner(self.steps)
        self.crashed: set[int] = set()
        #: each authority's fault settings as the plan has them now (also while crashed)
        self._settings = {i: FaultSettings() for i in range(len(names))}
        self.ran: list[dict[str, Any]] = []
        self.start = self.end = 0.0
        self._lanes = Lanes(lambda: self.clock() - self.start)

    # -- while the load runs --------------------------------------------------------------
    def begin(self) -> None:
        """Plan time 0: the load starts now."""
        self.start = self.end = self.clock()

    def run_due(self) -> float | None:
        """Issue every due step; seconds until the next one (None: the plan is done).

        Raises if an action issued earlier failed (the flow then aborts the run)."""
        self._lanes.raise_failure()
        elapsed = self.clock() - self.start
        for step in self._plan.due(elapsed):
            self.note(f"  {elapsed:6.2f}s  {step.op:<11} {list(step.targets)}  {step.label}")
            record = {"planned_at": step.at, "ran_at": round(elapsed, 3), **step.to_json()}
            self.ran.append(record)
            self._issue(step, record)
        upcoming = self._plan.next_at()
        return None if upcoming is None else max(0.0, upcoming - (self.clock() - self.start))

    def _issue(self, step: Step, record: dict[str, Any]) -> None:
        """Hand the step's actions to the lanes of the authorities it affects."""
        submit = self._lanes.submit
        match step.op:
            case "crash":
                crash = self.run.crash_machine if step.machine else self.run.crash
                for i in step.targets:
                    if i not in self.crashed:
                        self.crashed.add(i)
                        submit(i, record, step.label, crash, i)
            case "restart":
                for i in step.targets:
                    if i in self.crashed:
                        self.crashed.discard(i)
                        submit(i, record, "restart", self._restart, i, self._settings[i])
            case "faults":
                for i, settings in step.settings.items():
                    self._settings[i] = settings
                    if i not in self.crashed:  # a crashed authority gets them at its restart
                        submit(i, record, "fault settings", self._set_faults, i, settings)
            case "impersonate":
                assert step.as_authority is not None
                for i in step.targets:
                    submit(i, record, "impersonation", self.run.impersonate, i, step.as_authority)

    def _restart(self, index: int, settings: FaultSettings) -> None:
        """Back on its stores and keys, with the faults the plan has for it now (a fresh
        worker starts honest and healthy)."""
        self.run.restart(index)
        if not settings.is_clear():
            self._set_faults(index, settings)

    def _set_faults(self, index: int, settings: FaultSettings) -> None:
        if self.scenario.network == "kernel":
            emulated, kernel = split_network(settings)
            self.run.set_network(index, kernel)
            self.run.set_faults(index, emulated)
        else:
            self.run.set_faults(index, settings)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every action issued so far ended; False if some still run."""
        return self._lanes.wait(timeout)

    def load_ended(self) -> None:
        """The load is over: let every issued action end, then bring crashed authorities
        back (at once) so their stores can be read."""
        self.end = self.clock()
        self._lanes.wait()
        self._lanes.raise_failure()
        restored: dict[str, Any] = {}
        for i in sorted(self.crashed):
            self._lanes.submit(i, restored, "restart after the load", self.run.restart, i)
        self._lanes.wait()
        self._lanes.close()
        self._lanes.raise_failure()
        self.crashed.clear()

    def schedule(self) -> dict[str, Any]:
        """How late the steps ran: the latest start after its planned time, and the limit."""
        delays = [d for r in self.ran for d in start_delays(r).values()]
        return {"max_late_s": round(max(delays, default=0.0), 3), "limit_s": MAX_LATE}

    # -- afterwards -----------------------------------------------------------------------
    def byzantine(self) -> set[str]:
        """Authorities that were Byzantine at any time (impostors and misbehaving workers)."""
        names = {self.names[i] for s in self.steps if s.op == "impersonate" for i in s.targets}
        names |= {
            self.names[i]
            for s in self.steps
            if s.op == "faults"
            for i, settings in s.settings.items()
            if settings.byzantine != Byzantine()
        }
        return names

    def judge(
        self,
        collectors: Mapping[str, Mapping[str, Any]],
        out_dir: Path,
        extra: Mapping[str, Any] | None = None,
    ) -> ScenarioOutcome:
        """Check the invariants and write the report; `collectors`: authority -> digests.

        The collectors must have been read before this reads the stores: a digest is
        stored before it is reported, so every reported digest is in a store read later.
        """
        impostors = self.run.impersonations()
        raw = self.run.evidence()
        workers = [
            WorkerEvidence(
                e["authority"], e["worker_id"], e["records"], e["stored"], set(e["sent"])
            )
            for e in raw
        ]
        reported = {
            name: {d for ds in digests.get("others", {}).values() for d in ds}
            for name, digests in collectors.items()
        }
        byzantine = self.byzantine()
        # An impostor's batches never enter `sent`: stored anywhere, they are outsiders.
        evidence = Evidence(
            self.names,
            dict.fromkeys(self.names, 1),
            workers,
            reported,
            self.steps,
            self.start,
            self.end,
            byzantine,
        )
        results = check_all(evidence, self.scenario.expect, self.scenario.expect.allow_empty)
        results.append(check_schedule(self.ran, MAX_LATE))
        ok, why = verdict(results, self.scenario.expect)
        honest = [r for e in raw if e["authority"] not in byzantine for r in e["records"]]
        details = {
            "ran": self.ran,
            "schedule": self.schedule(),
            "impersonations": impostors,
            "byzantine": sorted(byzantine),
            **(extra or {}),
        }
        write_report(
            out_dir,
            self.scenario,
            self.names,
            self.steps,
            honest,
            self.start,
            results,
            (ok, why),
            extra=details,
        )
        return ScenarioOutcome(self.scenario.name, ok, why, out_dir, [r.to_json() for r in results])
