"""The checker passes a clean run and fails deliberately broken ones, with evidence."""

from __future__ import annotations

from faults.checker import Evidence, WorkerEvidence, check_all, verdict
from faults.plan import Step
from faults.scenario import Expectations
from worker.core.faults import FaultSettings

NAMES = ["a", "b", "c", "d"]
STAKES = dict.fromkeys(NAMES, 1)


def _record(digest: str, at: float, acked_by: list[str]) -> dict:
    return {"digest": digest, "quorum_at": at, "acked_by": acked_by, "stake": 1 + len(acked_by)}


def _evidence(
    records: dict[str, list[dict]] | None = None,
    stored: dict[str, set[str]] | None = None,
    steps: list[Step] | None = None,
    byzantine: set[str] | None = None,
    reported: dict[str, set[str]] | None = None,
    sent_extra: set[str] | None = None,
) -> Evidence:
    # A clean baseline: each authority seals one batch per second for 10 s, acked by
    # the next two, stored everywhere.
    if records is None:
        records = {
            n: [
                _record(f"{n}{t}", 100 + t + 0.5, [NAMES[(i + 1) % 4], NAMES[(i + 2) % 4]])
                for t in range(10)
            ]
            for i, n in enumerate(NAMES)
        }
    every = {r["digest"] for rs in records.values() for r in rs}
    stored = stored if stored is not None else dict.fromkeys(NAMES, every)
    workers = [
        WorkerEvidence(
            n,
            0,
            records.get(n, []),
            dict.fromkeys(stored.get(n, set()), True),
            {r["digest"] for r in records.get(n, [])} | (sent_extra or set()),
        )
        for n in NAMES
    ]
    return Evidence(
        names=NAMES,
        stakes=STAKES,
        workers=workers,
        reported_others=_reported(records, reported),
        steps=steps or [],
        load_start=100.0,
        load_end=110.0,
        byzantine=byzantine or set(),
    )


def _reported(
    records: dict[str, list[dict]], extra: dict[str, set[str]] | None
) -> dict[str, set[str]]:
    """Each acker's primary got OthersBatch for what it acked (plus `extra`)."""
    reported: dict[str, set[str]] = {n: set() for n in NAMES}
    for rs in records.values():
        for r in rs:
            for acker in r["acked_by"]:
                reported[acker].add(r["digest"])
    for name, digests in (extra or {}).items():
        reported[name] |= digests
    return reported


def _failed(results) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.name for r in results if not r.ok}


def test_clean_run_passes_every_check() -> None:
    results = check_all(_evidence(), Expectations())
    assert _failed(results) == set()
    assert verdict(results, Expectations()) == (True, "all checks passed")


def test_quorum_below_threshold_is_reported() -> None:
    ev = _evidence()
    ev.workers[0].records.append(_record("a-bad", 105, ["b"]))
    ev.workers[0].sent.add("a-bad")
    ev.reported_others["b"].add("a-bad")
    for w in ev.workers:
        w.stored["a-bad"] = True
    results = check_all(ev, Expectations())
    assert _failed(results) == {"quorum_acks"}
    bad = next(r for r in results if r.name == "quorum_acks")
    assert bad.examples == ["a-bad acked by stake 2 < 3"]


def test_forgers_beyond_f_break_storage_at_f_plus_1() -> None:
    # b and c forged their acks: a's batch is stored only at a, and they are Byzantine.
    records = {"a": [_record(f"a{t}", 100 + t + 0.5, ["b", "c"]) for t in range(10)]}
    stored = {"a": {f"a{t}" for t in range(10)}}
    ev = _evidence(records=records, stored=stored, byzantine={"b", "c"})
    # only the forgers acked, so no honest peer reported an ack: nothing to check there
    results = check_all(ev, Expectations(liveness="any"), {"acked_batches_survive_restarts"})
    assert _failed(results) == {"stored_at_f_plus_1_honest"}
    ok, why = verdict(results, Expectations(liveness="any", violation=True))
    assert ok and "stored_at_f_plus_1_honest" in why
    ok, _ = verdict(results, Expectations(liveness="any"))
    assert not ok


def test_outsider_and_corrupt_content_are_caught() -> None:
    ev = _evidence()
    ev.workers[1].stored["zz-from-nowhere"] = True
    ev.workers[2].stored[next(iter(ev.workers[2].stored))] = False
    assert _failed(check_all(ev, Expectations())) == {
        "no_outsider_batches",
        "stored_content_matches_digest",
    }


def test_acked_batch_lost_after_restart_is_caught() -> None:
    steps = [Step(2, "crash", (1,), "crash"), Step(4, "restart", (1,), "restart")]
    ev = _evidence(steps=steps, reported={"b": {"a0", "lost"}, "a": set()}, sent_extra={"lost"})
    failed = _failed(check_all(ev, Expectations()))
    assert failed == {"acked_batches_survive_restarts"}


def test_liveness_gap_while_quorum_possible_fails() -> None:
    ev = _evidence()
    for w in ev.workers:
        w.records = [r for r in w.records if not 104 <= r["quorum_at"] < 107]
    results = check_all(ev, Expectations(window=2))
    assert _failed(results) == {"liveness"}


def test_stall_with_more_than_f_partitioned_then_resume() -> None:
    cut = {
        0: FaultSettings(blocked=frozenset({"c", "d"})),
        1: FaultSettings(blocked=frozenset({"c", "d"})),
        2: FaultSettings(blocked=frozenset({"a", "b"})),
        3: FaultSettings(blocked=frozenset({"a", "b"})),
    }
    heal = {i: FaultSettings() for i in range(4)}
    steps = [
        Step(2, "faults", (0, 1), "partition", cut),
        Step(6, "faults", (0, 1, 2, 3), "clear", heal),
    ]
    ev = _evidence(steps=steps)
    for w in ev.workers:  # nothing reaches quorum while split
        w.records = [r for r in w.records if not 102 <= r["quorum_at"] < 106.5]
    expect = Expectations(liveness="stall", window=2, resume_within=2)
    results = check_all(ev, expect)
    assert _failed(results) == set(), [r.evidence for r in results]
    # ... and the same records under "continuous" fail
    assert _failed(check_all(ev, Expectations(window=2))) == {"liveness"}
    # a stall that leaks a quorum batch fails too
    ev.workers[0].records.append(_record("a-leak", 104.5, ["b", "c"]))
    ev.workers[0].sent.add("a-leak")
    for acker in ("b", "c"):
        ev.reported_others[acker].add("a-leak")
    for w in ev.workers:
        w.stored["a-leak"] = True
    assert _failed(check_all(ev, expect)) == {"liveness"}


def test_slow_resume_after_heal_is_judged_by_resume_within() -> None:
    # A kernel partition leaves TCP backed off: quorum resumes 2.5 s after the heal, so
    # the first window after it is empty. Within resume_within that is a pass; a resume
    # later than resume_within fails.
    cut = {i: FaultSettings(blocked=frozenset(NAMES) - {n}) for i, n in enumerate(NAMES)}
    steps = [
        Step(2, "faults", (0, 1, 2, 3), "partition", cut),
        Step(6, "faults", (0, 1, 2, 3), "clear", {i: FaultSettings() for i in range(4)}),
    ]
    ev = _evidence(steps=steps)
    for w in ev.workers:
        w.records = [r for r in w.records if not 102 <= r["quorum_at"] < 108.5]
    assert _failed(check_all(ev, Expectations(liveness="stall", window=2, resume_within=4))) == (
        set()
    )
    assert _failed(check_all(ev, Expectations(liveness="stall", window=2, resume_within=2))) == {
        "liveness"
    }


def test_ack_counted_from_an_honest_peer_that_never_stored_fails() -> None:
    # b's ack of a0 was counted, but b neither stores a0 nor did its primary get it.
    ev = _evidence()
    del ev.workers[1].stored["a0"]
    ev.reported_others["b"].discard("a0")
    results = check_all(ev, Expectations())
    assert _failed(results) == {"acks_from_holders", "acked_batches_reported"}
    bad = next(r for r in results if r.name == "acks_from_holders")
    assert bad.examples == ["a0 acked by b, which neither stores nor reported it"]
    assert verdict(results, Expectations()) == (
        False,
        "failed: acks_from_holders, acked_batches_reported",
    )


def test_acked_but_never_reported_fails() -> None:
    # c stored a0 and acked it, but never reported it to its primary.
    ev = _evidence()
    ev.reported_others["c"].discard("a0")
    assert _failed(check_all(ev, Expectations())) == {"acked_batches_reported"}
    # ... unless c is still down at the end (it could not deliver what it owed)
    ev.steps = [Step(9, "crash", (2,), "crash")]
    assert _failed(check_all(ev, Expectations(liveness="any"))) == set()


def test_an_empty_run_fails_unless_expected() -> None:
    ev = _evidence(records={}, stored={n: set() for n in NAMES})
    for expect in (Expectations(liveness="any"), Expectations(liveness="any", violation=True)):
        results = check_all(ev, expect)
        assert all(r.vacuous and not r.ok for r in results), [r.evidence for r in results]
        ok, why = verdict(results, expect)
        assert not ok and "examined nothing" in why
    names = {r.name for r in check_all(ev, Expectations())}
    assert verdict(check_all(ev, Expectations(liveness="any"), names), Expectations()) == (
        True,
        "all checks passed",
    )


def test_a_run_shorter_than_one_window_fails_continuous() -> None:
    results = check_all(_evidence(), Expectations(window=20))
    assert _failed(results) == {"liveness"}
    assert next(r for r in results if r.name == "liveness").vacuous
