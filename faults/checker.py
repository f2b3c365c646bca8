"""The invariant checker: what an honest committee must guarantee, checked after a run.

Pure functions over the evidence the driver collects (honest workers' LevelDB stores,
their quorum records, the primaries' collected digests, the plan that ran). Each
check returns pass/fail with the evidence behind it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from faults.plan import Step
from faults.scenario import Expectations
from worker.core.faults import FaultSettings


@dataclass
class WorkerEvidence:
    authority: str
    worker_id: int
    #: own batches that reached quorum: dicts with digest, quorum_at, acked_by, stake
    records: list[dict[str, Any]]
    #: digest hex -> True if the stored bytes hash to the key
    stored: dict[str, bool]
    #: every digest this worker sent to a peer (own batches, equivocations, replays)
    sent: set[str] = field(default_factory=set)


@dataclass
class Evidence:
    names: list[str]  # authorities in committee order (index = plan target)
    stakes: dict[str, int]
    workers: list[WorkerEvidence]
    #: authority -> digests (hex) its collector got as OthersBatch (reported before the ack)
    reported_others: dict[str, set[str]]
    steps: list[Step]
    load_start: float  # wall clock, plan time 0
    load_end: float
    byzantine: set[str]  # authorities that were Byzantine at any time

    @property
    def total(self) -> int:
        return sum(self.stakes.values())

    @property
    def quorum(self) -> int:
        return 2 * self.total // 3 + 1

    @property
    def validity(self) -> int:
        return (self.total + 2) // 3

    def honest(self, name: str) -> bool:
        return name not in self.byzantine


@dataclass
class CheckResult:
    name: str
    ok: bool
    evidence: str
    examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "evidence": self.evidence,
            "examples": self.examples[:10],
        }


def _judged(name: str, bad: list[str], passed: str, failed: str) -> CheckResult:
    """A check passes when it found nothing bad; its evidence says which way it went."""
    return CheckResult(name, not bad, failed if bad else passed, bad)


def _honest_records(ev: Evidence) -> Iterable[tuple[WorkerEvidence, dict[str, Any]]]:
    for w in ev.workers:
        if ev.honest(w.authority):
            for r in w.records:
                yield w, r


def check_quorum_stake(ev: Evidence) -> CheckResult:
    bad, n = [], 0
    for w, r in _honest_records(ev):
        n += 1
        stake = ev.stakes[w.authority] + sum(ev.stakes.get(p, 0) for p in set(r["acked_by"]))
        if stake < ev.quorum:
            bad.append(f"{r['digest'][:16]} acked by stake {stake} < {ev.quorum}")
    return _judged(
        "quorum_acks",
        bad,
        f"{n} batches honest workers reported at quorum; each acked by >= {ev.quorum} stake",
        f"{len(bad)} of {n} batches reported at quorum below {ev.quorum} stake",
    )


def check_stored_at_validity(ev: Evidence) -> CheckResult:
    holders: dict[str, int] = {}
    for w in ev.workers:
        if ev.honest(w.authority):
            for digest, ok in w.stored.items():
                if ok:
                    holders[digest] = holders.get(digest, 0) + ev.stakes[w.authority]
    bad, least, n = [], None, 0
    for _, r in _honest_records(ev):
        n += 1
        stake = holders.get(r["digest"], 0)
        least = stake if least is None else min(least, stake)
        if stake < ev.validity:
            bad.append(f"{r['digest'][:16]} stored by honest stake {stake} < {ev.validity}")
    return CheckResult(
        "stored_at_f_plus_1_honest",
        not bad,
        f"{n} quorum batches; least honest stake storing one: {least} (needs {ev.validity})",
        bad,
    )


def check_no_outsiders(ev: Evidence) -> CheckResult:
    sent = set().union(*(w.sent for w in ev.workers)) if ev.workers else set()
    bad = [
        f"{d[:16]} at {w.authority[:8]}"
        for w in ev.workers
        if ev.honest(w.authority)
        for d in w.stored
        if d not in sent
    ]
    total = sum(len(w.stored) for w in ev.workers if ev.honest(w.authority))
    return _judged(
        "no_outsider_batches",
        bad,
        f"{total} stored batches at honest workers, all sent by committee workers",
        f"{len(bad)} stored batches no committee worker sent",
    )


def check_content(ev: Evidence) -> CheckResult:
    bad = [
        f"{d[:16]} at {w.authority[:8]}"
        for w in ev.workers
        if ev.honest(w.authority)
        for d, ok in w.stored.items()
        if not ok
    ]
    return _judged(
        "stored_content_matches_digest",
        bad,
        "every stored batch hashes to its key",
        f"{len(bad)} stored batches do not hash to their key",
    )


def check_durable_acks(ev: Evidence) -> CheckResult:
    restarted = {ev.names[i] for s in ev.steps if s.op == "restart" for i in s.targets}
    stored: dict[str, set[str]] = {}
    for w in ev.workers:
        stored.setdefault(w.authority, set()).update(w.stored)
    bad, n = [], 0
    for name, reported in ev.reported_others.items():
        if not ev.honest(name):
            continue
        n += len(reported)
        bad += [
            f"{d[:16]} acked by {name[:8]}, missing" for d in reported - stored.get(name, set())
        ]
    return _judged(
        "acked_batches_survive_restarts",
        bad,
        f"{n} acked batches at honest workers ({len(restarted)} restarted) all still stored",
        f"{len(bad)} acked batches missing from their store",
    )


# -- liveness ---------------------------------------------------------------------------
def _unavailable(byz: FaultSettings) -> bool:
    return byz.byzantine.silent or byz.byzantine.corrupt != "none"


def quorum_possible_timeline(ev: Evidence) -> list[tuple[float, bool]]:
    """(plan time, can an honest connected group of live authorities reach quorum?)."""
    crashed: set[int] = set()
    settings = {i: FaultSettings() for i in range(len(ev.names))}
    points = [(0.0, True)]
    for step in ev.steps:
        if step.op == "crash":
            crashed |= set(step.targets)
        elif step.op == "restart":
            crashed -= set(step.targets)
        elif step.op == "faults":
            settings.update(step.settings)
        else:
            continue
        points.append((step.at, _possible(ev, crashed, settings)))
    return points


def _possible(ev: Evidence, crashed: set[int], settings: dict[int, FaultSettings]) -> bool:
    live = [i for i in range(len(ev.names)) if i not in crashed and not _unavailable(settings[i])]
    seen: set[int] = set()
    for start in live:
        if start in seen:
            continue
        group, todo = set(), [start]
        while todo:
            i = todo.pop()
            if i in group:
                continue
            group.add(i)
            todo += [
                j
                for j in live
                if j not in group
                and ev.names[j] not in settings[i].blocked
                and ev.names[i] not in settings[j].blocked
            ]
        seen |= group
        if sum(ev.stakes[ev.names[i]] for i in group) >= ev.quorum:
            return True
    return False


def _state_during(points: list[tuple[float, bool]], a: float, b: float) -> set[bool]:
    before = [p for t, p in points if t <= a]
    return {before[-1] if before else True} | {p for t, p in points if a < t < b}


def check_liveness(ev: Evidence, expect: Expectations) -> CheckResult:
    times = sorted(r["quorum_at"] - ev.load_start for _, r in _honest_records(ev))
    points = quorum_possible_timeline(ev)
    duration, w = ev.load_end - ev.load_start, expect.window
    windows = [(k * w, min((k + 1) * w, duration)) for k in range(int(duration // w))]

    def count(a: float, b: float) -> int:
        return sum(1 for t in times if a <= t < b)

    empty_live = [
        f"[{a:.0f}s,{b:.0f}s)"
        for a, b in windows
        if _state_during(points, a, b) == {True} and not count(a, b)
    ]
    stalled = [(a, b) for a, b in windows if _state_during(points, a - w, b) == {False}]
    leaks = [f"[{a:.0f}s,{b:.0f}s): {count(a, b)}" for a, b in stalled if count(a, b)]
    heal_times = [t for (_, p), (t, q) in itertools.pairwise(points) if not p and q]
    late = [
        f"after heal at {h:.1f}s"
        for h in heal_times
        if not any(h <= t <= h + expect.resume_within for t in times)
    ]
    if expect.liveness == "any":
        return CheckResult("liveness", True, f"not checked; {len(times)} quorum batches")
    if expect.liveness == "continuous":
        ok = not empty_live and not stalled
        msg = (
            f"quorum in all {len(windows)} windows of {w:g}s"
            if ok
            else f"{len(empty_live)} windows without quorum while it was possible"
            + (f"; quorum was impossible in {len(stalled)} windows" if stalled else "")
        )
        return CheckResult("liveness", ok, msg, empty_live)
    ok = bool(stalled) and not leaks and not late and not empty_live
    msg = (
        f"no quorum in {len(stalled)} windows with > f unavailable; resumed within "
        f"{expect.resume_within:g}s of every heal ({len(heal_times)})"
        if ok
        else f"stall windows: {len(stalled)}, with quorum anyway: {len(leaks)}, heals not "
        f"followed by quorum: {len(late)}, empty windows while possible: {len(empty_live)}"
    )
    return CheckResult("liveness", ok, msg, leaks + late + empty_live)


def check_all(ev: Evidence, expect: Expectations) -> list[CheckResult]:
    return [
        check_quorum_stake(ev),
        check_stored_at_validity(ev),
        check_no_outsiders(ev),
        check_content(ev),
        check_durable_acks(ev),
        check_liveness(ev, expect),
    ]


def verdict(results: list[CheckResult], expect: Expectations) -> tuple[bool, str]:
    """Pass when every check passes, or (negative controls) a safety check fails as expected."""
    safety = [r for r in results if r.name != "liveness"]
    liveness_ok = all(r.ok for r in results if r.name == "liveness")
    if expect.violation:
        found = [r.name for r in safety if not r.ok]
        ok = bool(found) and liveness_ok
        return ok, (
            f"expected violation found: {', '.join(found)}"
            if found
            else "expected a safety violation, found none"
        )
    failed = [r.name for r in results if not r.ok]
    return not failed, "all checks passed" if not failed else f"failed: {', '.join(failed)}"
