"""Per-peer request bookkeeping: one table, one timeout policy, no clock of its own."""

from __future__ import annotations

import pytest

from worker.core.requests import RequestTable, expiry_period


def test_answered_requests_leave_the_table() -> None:
    table: RequestTable[str] = RequestTable(timeout=1.0)
    assert table.add(1, now=0.0, value="a")
    assert not table.add(1, now=0.5, value="again")  # ids are unique per peer
    assert table.pop(1) == (1.0, "a")
    assert table.pop(1) is None  # a second answer is unknown
    assert len(table) == 0


def test_expiry_follows_insertion_order() -> None:
    table: RequestTable[None] = RequestTable(timeout=1.0)
    for request_id, now in [(1, 0.0), (2, 0.2), (3, 0.9)]:
        table.add(request_id, now, None)
    assert table.next_deadline() == 1.0
    assert table.expire(0.99) == []
    assert table.expire(1.2) == [1, 2]
    assert list(table) == [3]
    assert table.expire(5.0) == [3]
    assert table.next_deadline() is None


def test_an_explicit_deadline_is_kept() -> None:
    """A request moved from a waiting queue onto a link keeps its first deadline."""
    table: RequestTable[None] = RequestTable(timeout=1.0)
    table.add(7, now=5.0, value=None, deadline=5.5)
    assert table.expire(5.5) == [7]


def test_take_all_empties_the_table() -> None:
    table: RequestTable[bytes] = RequestTable(timeout=1.0)
    table.add(1, 0.0, b"x")
    table.add(2, 0.0, b"y")
    assert table.take_all() == {1: (1.0, b"x"), 2: (1.0, b"y")}
    assert 1 not in table and len(table) == 0


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RequestTable(timeout=0)


@pytest.mark.parametrize("timeout,period", [(0.1, 0.05), (2.0, 0.2), (60.0, 1.0)])
def test_expiry_period(timeout: float, period: float) -> None:
    assert expiry_period(timeout) == pytest.approx(period)
