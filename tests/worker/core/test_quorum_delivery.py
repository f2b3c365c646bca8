"""The sans-IO QuorumWaiter, scripted: delivery after quorum, pipelining and bounds."""

from __future__ import annotations

import pytest

from tests.worker.core.quorum_script import (
    WINDOW,
    ack,
    make,
    reject,
    submit,
    unit_stakes,
)
from worker.core.quorum_waiter import (
    Action,
    QuorumFailed,
    QuorumReached,
    Released,
    Send,
)

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
