"""The liveness check: quorum in every window while it is possible, or a stall then resume.

Which windows could reach quorum follows from the plan (crashes, partitions, Byzantine
silence); the check compares that timeline with the honest workers' quorum records.
"""

from __future__ import annotations

import itertools

from faults.evidence import CheckResult, Evidence, honest_records
from faults.scenario import Expectations
from worker.core.faults import FaultSettings


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


def _first_after(times: list[float], start: float, limit: float) -> float:
    """The first quorum time in [start, limit], or `limit` if there is none."""
    return next((t for t in times if start <= t <= limit), limit)


def check_liveness(ev: Evidence, expect: Expectations) -> CheckResult:
    times = sorted(r["quorum_at"] - ev.load_start for _, r in honest_records(ev))
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
    # After a heal, links come back at their own pace (a kernel partition leaves TCP's
    # retransmission timer backed off): windows before the first quorum that follows it,
    # within `resume_within`, are judged by the resume check, not as empty while possible.
    grace = [(h, _first_after(times, h, h + expect.resume_within)) for h in heal_times]
    excused = {f"[{a:.0f}s,{b:.0f}s)" for a, b in windows for h, end in grace if h <= a < end}
    if expect.liveness == "any":
        return CheckResult("liveness", True, f"{len(times)} quorum batches", [], len(times))
    if expect.liveness == "continuous":
        ok = not empty_live and not stalled
        msg = (
            f"quorum in all {len(windows)} windows of {w:g}s"
            if ok
            else f"{len(empty_live)} windows without quorum while it was possible"
            + (f"; quorum was impossible in {len(stalled)} windows" if stalled else "")
        )
        return CheckResult("liveness", ok, msg, empty_live, len(windows))
    empty_live = [e for e in empty_live if e not in excused]
    ok = bool(stalled) and not leaks and not late and not empty_live
    msg = (
        f"no quorum in {len(stalled)} windows with > f unavailable; resumed within "
        f"{expect.resume_within:g}s of every heal ({len(heal_times)})"
        if ok
        else f"stall windows: {len(stalled)}, with quorum anyway: {len(leaks)}, heals not "
        f"followed by quorum: {len(late)}, empty windows while possible: {len(empty_live)}"
    )
    return CheckResult("liveness", ok, msg, leaks + late + empty_live, len(windows))
