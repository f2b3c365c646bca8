"""The sans-IO QuorumWaiter under random interleavings: its invariants always hold."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.worker.core.quorum_script import (
    make,
)
from worker.core.quorum_waiter import (
    Action,
    QuorumFailed,
    QuorumReached,
    Send,
)

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
