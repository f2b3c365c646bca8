"""The sans-IO fault decisions: partitions, loss, delay with jitter, bandwidth caps."""

import pytest

from worker.core.faults import Byzantine, FaultSettings, LinkFault, LinkPlan


def test_clear_settings_deliver_at_once() -> None:
    plan = LinkPlan()
    assert plan.outbound("a", 1000, now=0.0) == 0.0
    assert plan.accepts_from("a")
    assert FaultSettings().is_clear() and FaultSettings().active_kinds() == set()


def test_partition_blocks_both_directions_for_blocked_peers_only() -> None:
    plan = LinkPlan(FaultSettings(blocked=frozenset({"a"})))
    assert plan.outbound("a", 10, 0.0) is None
    assert not plan.accepts_from("a")
    assert plan.outbound("b", 10, 0.0) == 0.0 and plan.accepts_from("b")


def test_loss_probability_is_seeded_and_close_to_target() -> None:
    settings = FaultSettings(links={"*": LinkFault(loss=0.25)})
    plan_a, plan_b = LinkPlan(settings, seed=7), LinkPlan(settings, seed=7)
    a = [plan_a.outbound("a", 1, 0.0) is None for _ in range(4000)]
    b = [plan_b.outbound("a", 1, 0.0) is None for _ in range(4000)]
    assert a == b
    assert 0.22 < sum(a) / len(a) < 0.28


def test_delay_with_jitter_stays_in_range_and_per_link_overrides_default() -> None:
    settings = FaultSettings(links={"*": LinkFault(delay=0.1, jitter=0.02), "fast": LinkFault()})
    plan = LinkPlan(settings, seed=1)
    holds = [plan.outbound("a", 1, 0.0) for _ in range(500)]
    assert all(h is not None and 0.08 <= h <= 0.12 for h in holds)
    assert len(set(holds)) > 100
    assert plan.outbound("fast", 1, 0.0) == 0.0


def test_bandwidth_cap_queues_messages_behind_each_other() -> None:
    plan = LinkPlan(FaultSettings(links={"a": LinkFault(bandwidth=1000)}))
    assert plan.outbound("a", 500, now=0.0) == pytest.approx(0.5)
    assert plan.outbound("a", 500, now=0.0) == pytest.approx(1.0)
    assert plan.outbound("a", 500, now=5.0) == pytest.approx(0.5)  # idle link: no backlog


def test_active_kinds() -> None:
    settings = FaultSettings(
        blocked=frozenset({"x"}),
        links={"*": LinkFault(delay=0.1, loss=0.1, bandwidth=1e6)},
        byzantine=Byzantine(silent=True, forged_ack=True, corrupt="malformed"),
    )
    expected = {"partition", "delay", "loss", "bandwidth", "silent", "forged_ack", "corrupt"}
    assert settings.active_kinds() == expected
