"""Placement plans (pure: no Ray started)."""

from __future__ import annotations

import pytest

from cluster.ray.placement import LOOPBACK, RayNode, plan_placement


def _nodes(count: int, one_machine: bool = False) -> list[RayNode]:
    return [
        RayNode(f"n{i}", "10.0.0.1" if one_machine else f"10.0.0.{i + 1}", is_head=i == 0)
        for i in range(count)
    ]


def test_one_authority_per_node_when_there_are_enough() -> None:
    plan = plan_placement(_nodes(4), authorities=4, workers=1)
    assert len({n.node_id for n in plan.homes}) == 4
    assert [ws[0] for ws in plan.workers] == list(plan.homes)
    assert not plan.packed and plan.note is None


def test_the_head_is_used_last() -> None:
    plan = plan_placement(_nodes(5), authorities=4, workers=1)
    assert all(not n.is_head for n in plan.homes)


def test_packed_with_a_note_when_nodes_are_fewer_than_authorities() -> None:
    plan = plan_placement(_nodes(2), authorities=4, workers=2)
    assert plan.packed
    assert plan.note is not None and "packed" in plan.note
    assert len({n.node_id for n in plan.homes}) == 2
    for home, workers in zip(plan.homes, plan.workers, strict=True):
        assert set(workers) == {home}  # a packed authority keeps its workers at home


def test_workers_spread_over_further_nodes_without_sharing_them() -> None:
    plan = plan_placement(_nodes(8), authorities=4, workers=2)
    assert plan.note is None
    used = [n.node_id for ws in plan.workers for n in ws]
    assert len(set(used)) == 8  # every worker on its own node
    for home, workers in zip(plan.homes, plan.workers, strict=True):
        assert workers[0] == home


def test_partial_spread_is_noted() -> None:
    plan = plan_placement(_nodes(6), authorities=4, workers=3)
    assert plan.note is not None and "share" in plan.note
    owners = {}
    for a, workers in enumerate(plan.workers):
        for node in workers:
            assert owners.setdefault(node.node_id, a) == a  # no node serves two authorities


def test_bind_host_is_loopback_on_one_machine_and_the_node_ip_otherwise() -> None:
    local = plan_placement(_nodes(3, one_machine=True), authorities=4, workers=1)
    assert set(local.hosts.values()) == {LOOPBACK}
    remote = plan_placement(_nodes(4), authorities=4, workers=1)
    assert {remote.host(n) for n in remote.homes} == {
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
    }


def test_no_nodes_is_an_error() -> None:
    with pytest.raises(ValueError, match="no live node"):
        plan_placement([], authorities=4, workers=1)
