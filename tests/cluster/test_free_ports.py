"""Port picking for hosts that bind later (cluster/committee.py)."""

from __future__ import annotations

from cluster.committee import free_ports


def test_ports_are_distinct_and_avoid_those_named() -> None:
    taken = set(free_ports(200))
    assert len(taken) == 200
    again = free_ports(200, avoid=taken)
    assert len(set(again)) == 200 and not taken & set(again)
