"""The sans-IO QuorumWaiter, scripted: counting stake, rejects and retries."""

from __future__ import annotations

import pytest

from tests.worker.core.quorum_script import (
    INITIAL,
    MAX_DELAY,
    REQUEST_TIMEOUT,
    ack,
    make,
    reject,
    rids,
    run,
    submit,
    unit_stakes,
)
from worker.core.quorum_waiter import (
    QuorumFailed,
    QuorumReached,
    Released,
    Send,
)

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
