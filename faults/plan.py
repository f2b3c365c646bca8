"""Resolving a scenario into a timed plan, and the fault state it implies (sans-IO).

`resolve` turns target specs into authority indices with the scenario's seed, expands
the crash-recovery cycle, and folds network and Byzantine actions into the complete
`FaultSettings` each authority must have after each step, so the driver only pushes
state. The same scenario and seed always give the same plan.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from faults.scenario import (
    ByzantineAction,
    Crash,
    CrashRecovery,
    Heal,
    Impersonate,
    LinkAction,
    Partition,
    Regions,
    Restart,
    Scenario,
    TargetSpec,
)
from worker.core.faults import ANY_PEER, Byzantine, FaultSettings, LinkFault

Op = Literal["crash", "restart", "faults", "impersonate"]


@dataclass(frozen=True)
class Step:
    at: float
    op: Op
    targets: tuple[int, ...]
    label: str
    #: for "faults": the full settings of every authority whose settings changed
    settings: dict[int, FaultSettings] = field(default_factory=dict)
    #: for "impersonate": the index of the authority being impersonated
    as_authority: int | None = None
    #: for "crash": the whole lab machine goes down, not only the workers
    machine: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "op": self.op,
            "targets": list(self.targets),
            "label": self.label,
            "settings": {str(i): s.model_dump(mode="json") for i, s in self.settings.items()},
            "as_authority": self.as_authority,
            "machine": self.machine,
        }


def faults_tolerated(authorities: int) -> int:
    return (authorities - 1) // 3


class _Resolver:
    def __init__(self, authorities: int, seed: int) -> None:
        self.n, self.f = authorities, faults_tolerated(authorities)
        self.rng = random.Random(seed)
        self.refs: dict[str, tuple[int, ...]] = {}

    def count(self, spec: str) -> int:
        n, f = self.n, self.f
        fixed = {"one": 1, "f": f, "f+1": f + 1, "minority": f, "majority": n - f, "all": n}
        return min(n, fixed[spec] if spec in fixed else int(spec.split()[1]))

    def __call__(self, spec: TargetSpec, among: tuple[int, ...] | None = None) -> tuple[int, ...]:
        pool = list(among if among is not None else range(self.n))
        if isinstance(spec, list):
            return tuple(sorted(set(spec)))
        if spec.startswith("ref "):
            return self.refs[spec[4:]]
        if spec == "all":
            return tuple(pool)
        return tuple(sorted(self.rng.sample(pool, min(len(pool), self.count(spec)))))


class FaultBook:
    """The fault settings every authority should have now, by authority index."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.state = {i: FaultSettings() for i in range(len(names))}

    def _set(self, i: int, **changes: Any) -> None:
        self.state[i] = self.state[i].model_copy(update=changes)

    def partition(self, side: tuple[int, ...]) -> set[int]:
        others = [i for i in self.state if i not in side]
        for i in side:
            self._set(i, blocked=self.state[i].blocked | {self.names[o] for o in others})
        for o in others:
            self._set(o, blocked=self.state[o].blocked | {self.names[i] for i in side})
        return set(self.state)

    def link(self, targets: tuple[int, ...], peers: tuple[int, ...] | None, fault: LinkFault):
        for i in targets:
            links = dict(self.state[i].links)
            for key in [ANY_PEER] if peers is None else [self.names[p] for p in peers if p != i]:
                links[key] = fault
            self._set(i, links=links)
        return set(targets)

    def byzantine(self, targets: tuple[int, ...], behaviour: Byzantine) -> set[int]:
        for i in targets:
            self._set(i, byzantine=behaviour)
        return set(targets)

    def clear(self, targets: tuple[int, ...]) -> set[int]:
        gone = {self.names[i] for i in targets}
        for i in self.state:
            if i in targets:
                self.state[i] = FaultSettings()
            else:
                links = {k: v for k, v in self.state[i].links.items() if k not in gone}
                self._set(i, blocked=self.state[i].blocked - gone, links=links)
        return set(self.state)


def _crash_recovery(action: CrashRecovery, pool: tuple[int, ...], resolve: _Resolver) -> list[Step]:
    steps, start, cycle = [], action.at, 0
    down_max = len(resolve(action.max_down, pool))
    while start + action.period <= action.until:  # whole cycles only: every crash is rebooted
        order = resolve.rng.sample(list(pool), len(pool))[:down_max]
        third = max(1, math.ceil(down_max / 3))
        groups = [order[i : i + third] for i in range(0, down_max, third)][:3]
        for k, group in enumerate(groups):
            at = start + k * action.period / 4
            label = f"cycle {cycle}: {'machine crash' if action.machine else 'crash'}"
            steps.append(Step(at, "crash", tuple(sorted(group)), label, machine=action.machine))
        steps.append(
            Step(
                start + 3 * action.period / 4,
                "restart",
                tuple(sorted(order)),
                f"cycle {cycle}: reboot all",
            )
        )
        start += action.period
        cycle += 1
    return steps


def resolve(scenario: Scenario, names: list[str]) -> list[Step]:
    """The plan: steps sorted by time (stable for equal times, in schedule order)."""
    if len(names) != scenario.committee.authorities:
        raise ValueError(
            f"{len(names)} authorities for a scenario of {scenario.committee.authorities}"
        )
    pick = _Resolver(len(names), scenario.seed)
    book = FaultBook(names)
    steps: list[Step] = []
    changed: set[int]

    def faults(at: float, targets: tuple[int, ...], label: str, changed: set[int]) -> Step:
        return Step(at, "faults", targets, label, {i: book.state[i] for i in sorted(changed)})

    for action in sorted(scenario.schedule, key=lambda a: a.at):
        targets = pick(action.targets)
        if action.id:
            pick.refs[action.id] = targets
        match action:
            case Crash():
                label = "machine crash" if action.machine else "crash"
                steps.append(Step(action.at, "crash", targets, label, machine=action.machine))
            case Restart():
                steps.append(Step(action.at, "restart", targets, "restart"))
            case CrashRecovery():
                steps += _crash_recovery(action, targets, pick)
            case Partition():
                steps.append(faults(action.at, targets, "partition", book.partition(targets)))
            case LinkAction():
                peers = None if action.peers == "all" else pick(action.peers)
                label = f"link {action.fault.model_dump(exclude_defaults=True)}"
                steps.append(
                    faults(action.at, targets, label, book.link(targets, peers, action.fault))
                )
            case Regions():
                changed = set()
                fault = LinkFault(delay=action.delay, jitter=action.jitter)
                for g, group in enumerate(action.groups):
                    others = tuple(i for h, grp in enumerate(action.groups) if h != g for i in grp)
                    changed |= book.link(tuple(group), others, fault)
                steps.append(faults(action.at, targets, f"regions {action.delay}s", changed))
            case ByzantineAction():
                label = f"byzantine {action.behaviour.model_dump(exclude_defaults=True)}"
                steps.append(
                    faults(action.at, targets, label, book.byzantine(targets, action.behaviour))
                )
            case Impersonate():
                steps.append(
                    Step(
                        action.at,
                        "impersonate",
                        targets,
                        "impersonate",
                        as_authority=action.as_authority,
                    )
                )
            case Heal():
                steps.append(faults(action.at, targets, "clear", book.clear(targets)))
    return sorted(steps, key=lambda s: s.at)


class PlanRunner:
    """Hands out the steps that are due; the driver calls it with its clock."""

    def __init__(self, steps: list[Step]) -> None:
        self._steps = list(steps)
        self._next = 0

    def due(self, elapsed: float) -> list[Step]:
        out = []
        while self._next < len(self._steps) and self._steps[self._next].at <= elapsed:
            out.append(self._steps[self._next])
            self._next += 1
        return out

    def next_at(self) -> float | None:
        return self._steps[self._next].at if self._next < len(self._steps) else None


def split_network(settings: FaultSettings) -> tuple[FaultSettings, FaultSettings]:
    """(what the transport emulates, what the kernel does) for `network: kernel`.

    The kernel takes partitions (`blocked`), loss and bandwidth caps; delay and jitter stay
    in the transport (the lab's kernel has no netem), and so do Byzantine behaviours.
    """
    emulated: dict[str, LinkFault] = {}
    kernel: dict[str, LinkFault] = {}
    for peer, link in settings.links.items():
        if link.delay or link.jitter:
            emulated[peer] = LinkFault(delay=link.delay, jitter=link.jitter)
        if link.loss or link.bandwidth:
            kernel[peer] = LinkFault(loss=link.loss, bandwidth=link.bandwidth)
    return (
        FaultSettings(links=emulated, byzantine=settings.byzantine),
        FaultSettings(blocked=settings.blocked, links=kernel),
    )
