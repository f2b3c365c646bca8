"""Unit tests for the sans-IO QuorumWaiter: every scenario is a scripted event sequence."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.quorum_waiter import (
    Action,
    QuorumFailed,
    QuorumReached,
    QuorumWaiter,
    Released,
    Send,
)

INITIAL, MAX_DELAY, REQUEST_TIMEOUT, WINDOW = 0.2, 1.0, 5.0, 5.0


def unit_stakes(n: int) -> dict[str, int]:
    return {"me": 1} | {f"p{i}": 1 for i in range(1, n)}


def make(stakes: dict[str, int], peers: list[str] | None = None, **overrides: Any) -> QuorumWaiter:
    total = sum(stakes.values())
    params: dict[str, Any] = {
        "me": "me",
        "stakes": stakes,
        "peers": [p for p in stakes if p != "me"] if peers is None else peers,
        "quorum_threshold": 2 * total // 3 + 1,
        "max_pending": 10,
        "retry_initial_delay": INITIAL,
        "retry_max_delay": MAX_DELAY,
        "request_timeout": REQUEST_TIMEOUT,
        "post_quorum_delivery": WINDOW,
        "quorum_timeout": None,
        "next_request_id": itertools.count(1).__next__,
    }
    return QuorumWaiter(**(params | overrides))


def rids(actions: list[Action]) -> dict[tuple[int, str], int]:
    """(batch, peer) -> request id of the Sends among `actions`."""
    return {(a.batch_id, a.peer): a.request_id for a in actions if isinstance(a, Send)}


def submit(w: QuorumWaiter, batch_id: int, now: float = 0.0) -> dict[str, int]:
    return {peer: rid for (_, peer), rid in rids(w.submit(batch_id, now)).items()}


def run(w: QuorumWaiter, start: float, end: float, step: float = 0.1) -> list[Action]:
    """Tick like a shell would, collecting everything emitted."""
    actions: list[Action] = []
    for i in range(1, round((end - start) / step) + 1):
        actions += w.on_tick(start + i * step)
    return actions


def ack(w: QuorumWaiter, rid: int, peer: str, now: float = 0.0) -> list[Action]:
    return w.on_response(rid, peer, True, now)


def reject(w: QuorumWaiter, rid: int, peer: str, now: float = 0.0) -> list[Action]:
    return w.on_response(rid, peer, False, now)


# -- counting --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "needed"), [(4, 2), (7, 4), (10, 6)])
def test_unit_stakes_need_quorum_minus_one_peer_acks(n: int, needed: int) -> None:
    w = make(unit_stakes(n))
    sent = submit(w, 1)
    assert sorted(sent) == sorted(p for p in unit_stakes(n) if p != "me")
    peers = list(sent)
    for peer in peers[: needed - 1]:
        assert ack(w, sent[peer], peer) == []
    last = peers[needed - 1]
    assert ack(w, sent[last], last) == [QuorumReached(1, tuple(peers[:needed]), needed + 1)]
    assert w.awaiting_quorum == 0 and w.tracked == 1


def test_unequal_stakes_one_heavy_ack_suffices() -> None:
    w = make({"me": 1, "a": 5, "b": 1, "c": 1})  # total 8, threshold 6
    sent = submit(w, 1)
    assert ack(w, sent["b"], "b") == []
    assert ack(w, sent["c"], "c") == []  # 1 + 1 + 1 = 3: light peers alone are not enough
    assert ack(w, sent["a"], "a") == [
        QuorumReached(1, ("b", "c", "a"), 8),
        Released(1, ("b", "c", "a")),
    ]


def test_heavy_peer_alone_reaches_quorum() -> None:
    w = make({"me": 1, "a": 5, "b": 1, "c": 1})
    sent = submit(w, 1)
    assert ack(w, sent["a"], "a") == [QuorumReached(1, ("a",), 6)]


def test_duplicate_acks_are_ignored() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    assert ack(w, sent["p1"], "p1") == []
    assert ack(w, sent["p1"], "p1") == []
    assert ack(w, sent["p1"], "p1") == []
    assert ack(w, sent["p2"], "p2") == [QuorumReached(1, ("p1", "p2"), 3)]


def test_wrong_peer_unknown_peer_and_unknown_request_id_are_ignored() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    assert ack(w, sent["p1"], "p2") == []  # p2 answering p1's request
    assert ack(w, sent["p1"], "intruder") == []
    assert ack(w, 999_999, "p3") == []
    assert w.on_failure(999_999, "p3", 0.0) == []
    assert reject(w, sent["p1"], "p2") == []  # a spoofed reject must not block p1 either
    assert ack(w, sent["p1"], "p1") == []
    assert ack(w, sent["p2"], "p2") == [QuorumReached(1, ("p1", "p2"), 3)]


def test_zero_and_unknown_stake_peers_add_nothing() -> None:
    stakes = unit_stakes(4) | {"zero": 0}
    w = make(stakes, peers=["p1", "p2", "p3", "zero", "stranger"])
    sent = submit(w, 1)
    assert ack(w, sent["zero"], "zero") == []
    assert ack(w, sent["stranger"], "stranger") == []
    assert ack(w, sent["p1"], "p1") == []
    assert ack(w, sent["p2"], "p2") == [QuorumReached(1, ("zero", "stranger", "p1", "p2"), 3)]


def test_own_stake_alone_committee_of_one() -> None:
    w = make({"me": 1})
    assert w.submit(7, 0.0) == [QuorumReached(7, (), 1), Released(7, ())]
    assert w.tracked == 0 and w.next_deadline() is None


def test_own_stake_alone_still_delivers_to_peers() -> None:
    w = make({"me": 10, "a": 1})  # threshold 8
    actions = w.submit(1, 0.0)
    assert actions[0] == QuorumReached(1, (), 10)
    assert [(a.peer, a.batch_id) for a in actions[1:] if isinstance(a, Send)] == [("a", 1)]
    assert ack(w, rids(actions)[(1, "a")], "a") == [Released(1, ("a",))]


def test_peers_that_can_never_make_quorum_fail_at_submit() -> None:
    w = make(unit_stakes(4), peers=["p1"])  # 1 + 1 < 3 even if p1 acks
    assert w.submit(1, 0.0) == [QuorumFailed(1, "anti_quorum"), Released(1, ())]
    assert w.tracked == 0


# -- rejects -----------------------------------------------------------------------------------


def test_single_reject_at_n4_does_not_fail() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    assert reject(w, sent["p1"], "p1") == []
    assert ack(w, sent["p2"], "p2") == []
    assert ack(w, sent["p3"], "p3") == [
        QuorumReached(1, ("p2", "p3"), 3),
        Released(1, ("p2", "p3")),  # every peer has answered
    ]


def test_two_rejects_at_n4_fail_fast() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    assert ack(w, sent["p3"], "p3") == []
    assert reject(w, sent["p1"], "p1") == []
    assert reject(w, sent["p2"], "p2") == [QuorumFailed(1, "anti_quorum"), Released(1, ("p3",))]
    assert w.tracked == 0 and w.awaiting_quorum == 0 and w.next_deadline() is None
    assert ack(w, sent["p3"], "p3", 1.0) == []  # released: late answers are unknown ids


def test_rejected_peer_is_never_retried() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    assert reject(w, sent["p1"], "p1") == []
    assert w.on_failure(sent["p1"], "p1", 0.0) == []
    retried = [a.peer for a in run(w, 0.0, 60.0) if isinstance(a, Send)]
    assert set(retried) == {"p2", "p3"}


# -- retries -----------------------------------------------------------------------------------


def test_backoff_doubles_then_caps_until_the_late_peer_acks() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    assert ack(w, sent["p1"], "p1") == []
    assert reject(w, sent["p2"], "p2") == []  # p3 is now the only way to quorum
    rid, now = sent["p3"], 0.0
    delays = []
    for _ in range(6):
        assert w.on_failure(rid, "p3", now) == []
        due = w.next_deadline()
        assert due is not None
        delays.append(due - now)
        assert w.on_tick(due - 0.01) == []
        (retry,) = w.on_tick(due)
        assert isinstance(retry, Send) and retry.peer == "p3" and retry.request_id != rid
        rid, now = retry.request_id, due
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert ack(w, rid, "p3", now) == [
        QuorumReached(1, ("p1", "p3"), 3),
        Released(1, ("p1", "p3")),
    ]


def test_failure_of_a_superseded_request_does_not_reschedule() -> None:
    w = make({"me": 1, "p1": 1})  # one peer: next_deadline is p1's timer
    sent = submit(w, 1)
    w.on_failure(sent["p1"], "p1", 0.0)
    (retry,) = w.on_tick(0.2)
    assert w.on_failure(sent["p1"], "p1", 0.3) == []  # the old id again: current one in flight
    assert w.next_deadline() == pytest.approx(0.2 + REQUEST_TIMEOUT)
    assert w.on_failure(retry.request_id, "p1", 0.3) == []
    assert w.on_failure(retry.request_id, "p1", 0.3) == []  # second report: still one retry
    assert w.next_deadline() == pytest.approx(0.3 + 0.4)


def test_dead_peer_is_retried_for_hours_at_the_capped_delay() -> None:
    w = make({"me": 1, "p1": 1})
    submit(w, 1)
    for _ in range(3000):  # 1500 timeouts: an uncapped 2**n backoff would overflow a float
        due = w.next_deadline()
        assert due is not None
        w.on_tick(due)
    assert w.next_deadline() == pytest.approx(due + REQUEST_TIMEOUT)  # a retry is in flight
    assert w.on_tick(due + REQUEST_TIMEOUT) == []
    assert w.next_deadline() == pytest.approx(due + REQUEST_TIMEOUT + MAX_DELAY)


def test_request_timeout_counts_as_failure_and_retries() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    assert w.next_deadline() == pytest.approx(REQUEST_TIMEOUT)
    assert w.on_tick(REQUEST_TIMEOUT - 0.01) == []
    assert w.on_tick(REQUEST_TIMEOUT) == []  # timed out: back off first
    assert w.next_deadline() == pytest.approx(REQUEST_TIMEOUT + INITIAL)
    retries = rids(w.on_tick(REQUEST_TIMEOUT + INITIAL))
    assert sorted(peer for _, peer in retries) == ["p1", "p2", "p3"]
    assert not set(retries.values()) & set(sent.values())


def test_late_ack_to_an_old_request_id_counts_once() -> None:
    w = make(unit_stakes(4))
    old = submit(w, 1)
    w.on_tick(REQUEST_TIMEOUT)
    new = {peer: rid for (_, peer), rid in rids(w.on_tick(REQUEST_TIMEOUT + INITIAL)).items()}
    assert ack(w, old["p1"], "p1") == []  # counts: p1 no longer retried
    assert ack(w, new["p1"], "p1") == []  # same peer, newer id: ignored
    assert ack(w, old["p1"], "p1") == []
    later = run(w, REQUEST_TIMEOUT + INITIAL, 40.0)
    assert {a.peer for a in later if isinstance(a, Send)} == {"p2", "p3"}
    assert ack(w, new["p2"], "p2") == [QuorumReached(1, ("p1", "p2"), 3)]


# -- after quorum -------------------------------------------------------------------------------


def test_post_quorum_delivery_retries_then_stops_after_window() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    ack(w, sent["p1"], "p1", 1.0)
    assert ack(w, sent["p2"], "p2", 1.0) == [QuorumReached(1, ("p1", "p2"), 3)]
    assert w.tracked == 1 and w.awaiting_quorum == 0
    w.on_failure(sent["p3"], "p3", 2.0)
    assert w.on_tick(2.2) == [Send(4, "p3", 1)]  # best-effort delivery continues
    assert w.on_tick(1.0 + WINDOW - 0.01) == []
    assert w.on_tick(1.0 + WINDOW) == [Released(1, ("p1", "p2"))]
    assert w.tracked == 0 and w.next_deadline() is None
    assert w.on_tick(1000.0) == []
    assert ack(w, 4, "p3", 1000.0) == []


def test_ack_after_quorum_is_delivered_and_releases_when_all_answered() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    ack(w, sent["p1"], "p1")
    ack(w, sent["p2"], "p2")
    assert ack(w, sent["p3"], "p3", 1.0) == [Released(1, ("p1", "p2", "p3"))]
    assert w.tracked == 0 and w.next_deadline() is None


def test_reject_after_quorum_releases_when_all_answered() -> None:
    w = make(unit_stakes(4))
    sent = submit(w, 1)
    ack(w, sent["p1"], "p1")
    ack(w, sent["p2"], "p2")
    assert reject(w, sent["p3"], "p3") == [Released(1, ("p1", "p2"))]


def test_zero_delivery_window_releases_right_after_quorum() -> None:
    w = make(unit_stakes(4), post_quorum_delivery=0.0)
    sent = submit(w, 1)
    ack(w, sent["p1"], "p1")
    assert ack(w, sent["p2"], "p2") == [
        QuorumReached(1, ("p1", "p2"), 3),
        Released(1, ("p1", "p2")),
    ]
    assert w.tracked == 0


# -- pipelining and bounds ----------------------------------------------------------------------


def test_later_batch_reaches_quorum_while_earlier_one_waits() -> None:
    w = make(unit_stakes(4))
    first, second = submit(w, 1), submit(w, 2)
    assert ack(w, first["p1"], "p1") == []
    ack(w, second["p2"], "p2")
    assert ack(w, second["p3"], "p3") == [QuorumReached(2, ("p2", "p3"), 3)]
    assert w.awaiting_quorum == 1 and w.tracked == 2
    assert ack(w, first["p3"], "p3") == [QuorumReached(1, ("p1", "p3"), 3)]


def test_max_pending_blocks_submit_until_a_quorum() -> None:
    w = make(unit_stakes(4), max_pending=2)
    first = submit(w, 1)
    submit(w, 2)
    assert not w.can_submit()
    with pytest.raises(RuntimeError):
        w.submit(3, 0.0)
    ack(w, first["p1"], "p1")
    ack(w, first["p2"], "p2")
    assert w.can_submit()  # post-quorum delivery does not hold a pipeline slot
    submit(w, 3)
    assert w.awaiting_quorum == 2 and w.tracked == 3


def test_tracked_bounded_under_many_post_quorum_batches() -> None:
    max_pending = 3
    w = make(unit_stakes(4), max_pending=max_pending, post_quorum_delivery=1000.0)
    submit(w, 1001)  # two batches stuck awaiting quorum, one pipeline slot left cycling
    submit(w, 1002)
    released: list[int] = []
    for batch in range(1, 21):
        sent = submit(w, batch, float(batch))
        ack(w, sent["p1"], "p1", float(batch))
        actions = ack(w, sent["p2"], "p2", float(batch))
        assert actions[0] == QuorumReached(batch, ("p1", "p2"), 3)
        released += [a.batch_id for a in actions if isinstance(a, Released)]
        assert w.tracked == 2 + min(batch, max_pending) <= 2 * max_pending
    assert released == list(range(1, 21 - max_pending))  # oldest deliveries dropped first
    assert w.awaiting_quorum == 2


def test_memory_bound_releases_oldest_delivery_first() -> None:
    w = make(unit_stakes(4), max_pending=2, post_quorum_delivery=100.0)
    for batch in (1, 2, 3):
        sent = submit(w, batch)
        ack(w, sent["p1"], "p1")
        actions = ack(w, sent["p2"], "p2")
        expected: list[Action] = [QuorumReached(batch, ("p1", "p2"), 3)]
        if batch == 3:
            expected.append(Released(1, ("p1", "p2")))
        assert actions == expected
    assert w.tracked == 2


def test_quorum_timeout_fails_and_releases() -> None:
    w = make(unit_stakes(4), quorum_timeout=10.0)
    sent = submit(w, 1, 1.0)
    ack(w, sent["p1"], "p1", 2.0)
    assert w.on_tick(10.99) == []
    assert w.on_tick(11.0) == [QuorumFailed(1, "timeout"), Released(1, ("p1",))]
    assert w.tracked == 0 and w.can_submit()
    assert ack(w, sent["p2"], "p2", 12.0) == []


def test_quorum_timeout_does_not_fire_after_quorum() -> None:
    w = make(unit_stakes(4), quorum_timeout=3.0)
    sent = submit(w, 1)
    ack(w, sent["p1"], "p1", 1.0)
    ack(w, sent["p2"], "p2", 1.0)
    actions = w.on_tick(3.0)
    assert not any(isinstance(a, QuorumFailed) for a in actions)
    assert w.on_tick(1.0 + WINDOW) == [Released(1, ("p1", "p2"))]


def test_no_quorum_timeout_waits_forever() -> None:
    w = make(unit_stakes(4))
    submit(w, 1)
    actions = w.on_tick(1e9)
    assert not any(isinstance(a, (QuorumFailed, Released)) for a in actions)
    assert w.tracked == 1 and w.next_deadline() is not None


# -- property ---------------------------------------------------------------------------------

answer = st.tuples(
    st.just("answer"),
    st.integers(0, 10_000),
    st.sampled_from([True, True, True, False]),  # mostly acks, so quorums do happen
    st.sampled_from([False, False, False, True]),  # now and then a spoofed sender
)
event = st.one_of(
    st.tuples(st.just("submit")),
    answer,
    answer,
    st.tuples(st.just("fail"), st.integers(0, 10_000)),
    st.tuples(st.just("tick"), st.floats(0, 1.5, allow_nan=False)),
)


@settings(max_examples=400, deadline=None)
@given(
    stakes=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    max_pending=st.integers(1, 3),
    window=st.sampled_from([0.0, 1.0, 4.0]),
    quorum_timeout=st.sampled_from([None, 4.0, 20.0]),
    events=st.lists(event, min_size=5, max_size=120),
)
def test_random_interleavings_keep_invariants(
    stakes: list[int],
    max_pending: int,
    window: float,
    quorum_timeout: float | None,
    events: list[tuple[Any, ...]],
) -> None:
    committee = {"me": max(1, stakes[0])} | {f"p{i}": s for i, s in enumerate(stakes[1:], 1)}
    threshold = 2 * sum(committee.values()) // 3 + 1
    w = make(
        committee,
        max_pending=max_pending,
        post_quorum_delivery=window,
        quorum_timeout=quorum_timeout,
        request_timeout=1.0,
        retry_max_delay=0.8,
    )
    now, next_batch = 0.0, 1
    sends: list[Send] = []
    reached: dict[int, QuorumReached] = {}
    failed: set[int] = set()
    released: set[int] = set()
    first_answer: dict[int, dict[str, bool]] = {}  # what the waiter must have counted

    def absorb(actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                assert a.batch_id not in released
                assert first_answer[a.batch_id].get(a.peer) is None  # answered: no resend
                sends.append(a)
            elif isinstance(a, QuorumReached):
                assert a.batch_id not in reached and a.batch_id not in failed
                assert a.batch_id not in released
                assert len(set(a.acked_by)) == len(a.acked_by)
                assert a.stake == committee["me"] + sum(committee[p] for p in a.acked_by)
                assert a.stake >= threshold
                acks = [p for p, ok in first_answer[a.batch_id].items() if ok]
                assert list(a.acked_by) == acks
                reached[a.batch_id] = a
            elif isinstance(a, QuorumFailed):
                assert a.batch_id not in reached and a.batch_id not in failed
                assert a.batch_id not in released
                failed.add(a.batch_id)
            else:
                assert a.batch_id in reached or a.batch_id in failed
                assert a.batch_id not in released
                acks = [p for p, ok in first_answer[a.batch_id].items() if ok]
                assert list(a.delivered_to) == acks
                released.add(a.batch_id)
        assert w.awaiting_quorum <= max_pending
        assert w.tracked <= 2 * max_pending
        for batch, answers in first_answer.items():  # no missed quorum, no missed fail-fast
            if batch not in reached and batch not in failed:
                acked = sum(committee[p] for p, ok in answers.items() if ok)
                lost = sum(committee[p] for p, ok in answers.items() if not ok)
                assert committee["me"] + acked < threshold
                assert sum(committee.values()) - lost >= threshold

    for kind, *args in events:
        if kind == "submit":
            if not w.can_submit():
                with pytest.raises(RuntimeError):
                    w.submit(next_batch, now)
                continue
            first_answer[next_batch] = {}
            absorb(w.submit(next_batch, now))
            next_batch += 1
        elif kind == "answer" and sends:
            index, accepted, spoof = args
            s = sends[-1 - index % min(len(sends), 12)]  # recent sends: batches still live
            peer = "p1" if spoof and s.peer != "p1" else s.peer
            if s.batch_id not in released and peer == s.peer:
                first_answer[s.batch_id].setdefault(peer, accepted)
            absorb(w.on_response(s.request_id, peer, accepted, now))
        elif kind == "fail" and sends:
            s = sends[-1 - args[0] % min(len(sends), 12)]
            assert w.on_failure(s.request_id, s.peer, now) == []
        elif kind == "tick":
            now += args[0]
            due = w.next_deadline()
            actions = w.on_tick(now)
            assert not actions or (due is not None and due <= now)
            absorb(actions)
    absorb(w.on_tick(now + 1e6))  # with a timeout or window set, everything is eventually freed
    if quorum_timeout is not None:
        assert w.tracked == 0
    assert w.tracked == len(first_answer) - len(released)
