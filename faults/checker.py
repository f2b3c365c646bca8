"""The invariant checker: what an honest committee must guarantee, checked after a run.

Pure functions over the evidence the driver collects (honest workers' LevelDB stores,
their quorum records, the primaries' collected digests, the plan that ran). Each
check returns pass/fail with the evidence behind it, and how many items it examined:
a check that examined nothing fails (it could not have failed otherwise), unless the
scenario says it expects that (`allow_empty`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from faults.evidence import CheckResult, Evidence, WorkerEvidence, honest_records
from faults.liveness import check_liveness, quorum_possible_timeline
from faults.scenario import Expectations

#: the name of the check that the run kept its plan's times (see `check_schedule`)
SCHEDULE = "schedule"

__all__ = [
    "CheckResult",
    "Evidence",
    "WorkerEvidence",
    "check_all",
    "check_liveness",
    "check_schedule",
    "quorum_possible_timeline",
    "verdict",
]


def _judged(name: str, bad: list[str], passed: str, failed: str, examined: int) -> CheckResult:
    """A check passes when it found nothing bad; its evidence says which way it went."""
    return CheckResult(name, not bad, failed if bad else passed, bad, examined)


def _nonvacuous(result: CheckResult, allow_empty: Collection[str]) -> CheckResult:
    """A check with nothing to examine fails, unless the scenario expects exactly that."""
    if result.examined != 0 or result.name in allow_empty or not result.ok:
        return result
    evidence = f"examined nothing ({result.evidence}); the scenario does not expect that"
    return CheckResult(result.name, False, evidence, [], 0, vacuous=True)


def check_quorum_stake(ev: Evidence) -> CheckResult:
    bad, n = [], 0
    for w, r in honest_records(ev):
        n += 1
        stake = ev.stakes[w.authority] + sum(ev.stakes.get(p, 0) for p in set(r["acked_by"]))
        if stake < ev.quorum:
            bad.append(f"{r['digest'][:16]} acked by stake {stake} < {ev.quorum}")
    return _judged(
        "quorum_acks",
        bad,
        f"{n} batches honest workers reported at quorum; each acked by >= {ev.quorum} stake",
        f"{len(bad)} of {n} batches reported at quorum below {ev.quorum} stake",
        n,
    )


def check_stored_at_validity(ev: Evidence) -> CheckResult:
    holders: dict[str, int] = {}
    for w in ev.workers:
        if ev.honest(w.authority):
            for digest, ok in w.stored.items():
                if ok:
                    holders[digest] = holders.get(digest, 0) + ev.stakes[w.authority]
    bad, least, n = [], None, 0
    for _, r in honest_records(ev):
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
        n,
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
        total,
    )


def check_content(ev: Evidence) -> CheckResult:
    total = sum(len(w.stored) for w in ev.workers if ev.honest(w.authority))
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
        total,
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
        n,
    )


def _honest_acks(ev: Evidence) -> Iterable[tuple[WorkerEvidence, str, str]]:
    """(author, digest, acker) for every ack of an honest peer an honest record counted."""
    for w, r in honest_records(ev):
        for acker in sorted(set(r["acked_by"])):
            if acker != w.authority and ev.honest(acker):
                yield w, r["digest"], acker


def check_acks_from_holders(ev: Evidence) -> CheckResult:
    """`quorum_acks` trusts the author's acked-by list; this asks each honest acker (that
    is up at the end): an ack counted from a peer that never stored the batch, nor
    reported it, is a false ack."""
    stored: dict[tuple[str, int], set[str]] = {}
    for w in ev.workers:
        stored.setdefault((w.authority, w.worker_id), set()).update(w.stored)
    bad, n, down = [], 0, _down_at_end(ev)  # a worker down at the end has no store to read
    for w, digest, acker in _honest_acks(ev):
        if acker in down:
            continue
        n += 1
        held = digest in stored.get((acker, w.worker_id), set())
        if not held and digest not in ev.reported_others.get(acker, set()):
            bad.append(f"{digest[:16]} acked by {acker[:8]}, which neither stores nor reported it")
    return _judged(
        "acks_from_holders",
        bad,
        f"{n} acks of honest peers counted at quorum; each acker holds the batch",
        f"{len(bad)} of {n} acks counted from honest peers that never held the batch",
        _record_count(ev),
    )


def _record_count(ev: Evidence) -> int:
    """Ack checks examine the honest quorum records (a record may hold no honest ack)."""
    return sum(1 for _ in honest_records(ev))


def _down_at_end(ev: Evidence) -> set[str]:
    down: set[int] = set()
    for step in ev.steps:
        if step.op == "crash":
            down |= set(step.targets)
        elif step.op == "restart":
            down -= set(step.targets)
    return {ev.names[i] for i in down}


def check_acks_reported(ev: Evidence) -> CheckResult:
    """An ack means stored and reported: every ack of an honest peer counted at quorum
    reached that peer's primary as OthersBatch (a worker still down at the end could not
    deliver what it owed, and is left out)."""
    down = _down_at_end(ev)
    bad, n = [], 0
    for _, digest, acker in _honest_acks(ev):
        if acker in down:
            continue
        n += 1
        if digest not in ev.reported_others.get(acker, set()):
            bad.append(f"{digest[:16]} acked by {acker[:8]}, never reported to its primary")
    return _judged(
        "acked_batches_reported",
        bad,
        f"{n} acks of honest peers counted at quorum; all reported ({len(down)} down at the end)",
        f"{len(bad)} of {n} acks never reported by the acker's primary",
        _record_count(ev),
    )


def start_delays(record: Mapping[str, Any]) -> dict[str, float]:
    """How late each target's action of one ran step started (s after its planned time)."""
    return {t: started - record["planned_at"] for t, started in record.get("started", {}).items()}


def check_schedule(ran: Iterable[Mapping[str, Any]], limit: float) -> CheckResult:
    """The faults ran when the plan said: every action of every step started within
    `limit` s of its planned time. Not a property of the protocol but of the run: the
    liveness check reads the plan's times, so a late step makes the run untrustworthy."""
    late, n, worst = [], 0, 0.0
    for r in ran:
        for target, delay in sorted(start_delays(r).items()):
            n += 1
            worst = max(worst, delay)
            if delay > limit:
                late.append(
                    f"{r['op']} ({r['label']}) of {target} started at "
                    f"{r['planned_at'] + delay:.2f}s, planned at {r['planned_at']:g}s"
                )
    if late:
        evidence = f"{len(late)} of {n} actions started over {limit:g}s late (worst {worst:.2f}s)"
    else:
        evidence = f"{n} actions, each started within {limit:g}s of plan (worst {worst:.2f}s)"
    return CheckResult(SCHEDULE, not late, evidence, late, n)


# -- liveness ---------------------------------------------------------------------------
def check_all(
    ev: Evidence, expect: Expectations, allow_empty: Collection[str] = ()
) -> list[CheckResult]:
    """Every check; `allow_empty` names the checks the scenario expects to find nothing
    to examine (any other that examined nothing fails)."""
    results = [
        check_quorum_stake(ev),
        check_acks_from_holders(ev),
        check_acks_reported(ev),
        check_stored_at_validity(ev),
        check_no_outsiders(ev),
        check_content(ev),
        check_durable_acks(ev),
        check_liveness(ev, expect),
    ]
    return [_nonvacuous(r, allow_empty) for r in results]


def verdict(results: list[CheckResult], expect: Expectations) -> tuple[bool, str]:
    """Pass when every check passes, or (negative controls) a safety check fails as expected.
    A check that failed for examining nothing never counts as the expected violation, and
    a run that did not keep its schedule passes nothing (it is untrusted)."""
    for r in results:
        if r.name == SCHEDULE and not r.ok:
            return False, f"untrusted: the schedule was not kept ({r.evidence})"
    results = [r for r in results if r.name != SCHEDULE]
    safety = [r for r in results if r.name != "liveness"]
    liveness_ok = all(r.ok for r in results if r.name == "liveness")
    vacuous = [r.name for r in results if r.vacuous]
    if expect.violation:
        found = [r.name for r in safety if not r.ok and not r.vacuous]
        ok = bool(found) and liveness_ok and not vacuous
        if vacuous:
            return False, f"examined nothing: {', '.join(vacuous)}"
        return ok, (
            f"expected violation found: {', '.join(found)}"
            if found
            else "expected a safety violation, found none"
        )
    failed = [r.name for r in results if not r.ok and not r.vacuous]
    if vacuous:
        return False, f"examined nothing: {', '.join(vacuous)}" + (
            f"; failed: {', '.join(failed)}" if failed else ""
        )
    return not failed, "all checks passed" if not failed else f"failed: {', '.join(failed)}"
