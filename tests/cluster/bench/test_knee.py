"""The knee search, fed verdicts: double until a rate fails, bisect, stop; and the verdict
of one step from a run's summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.bench.knee import KneeSearch, judge_step, lockstep


def drive(search: KneeSearch, holds: Callable[[int], bool]) -> list[int]:
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, holds(rate))
        assert len(tried) < 50
    return tried


def test_doubles_until_a_failure_then_bisects_a_few_steps() -> None:
    search = KneeSearch(1_000, bisect_steps=3)
    tried = drive(search, lambda r: r <= 11_000)
    assert tried == [1_000, 2_000, 4_000, 8_000, 16_000, 12_000, 10_000, 11_000]
    assert search.knee == 11_000 and not search.capped


def test_a_failing_start_halves_until_a_rate_holds() -> None:
    search = KneeSearch(8_000, bisect_steps=1)
    tried = drive(search, lambda r: r <= 1_500)
    assert tried == [8_000, 4_000, 2_000, 1_000, 1_500]
    assert search.knee == 1_500


def test_nothing_holds_ends_at_the_floor_with_no_knee() -> None:
    search = KneeSearch(4, min_rate=1)
    assert drive(search, lambda r: False) == [4, 2, 1]
    assert search.knee == 0


def test_the_cap_ends_the_doubling_and_says_so() -> None:
    search = KneeSearch(1_000, max_rate=3_000)
    assert drive(search, lambda r: True) == [1_000, 2_000, 3_000]
    assert search.knee == 3_000 and search.capped


def test_bisection_stops_when_the_interval_is_closed() -> None:
    search = KneeSearch(1, bisect_steps=10)
    tried = drive(search, lambda r: r <= 2)
    assert tried == [1, 2, 4, 3] and search.knee == 2


def test_lockstep_takes_turns_in_alternating_order_until_every_search_ends() -> None:
    searches = {"tcp": KneeSearch(1_000, bisect_steps=1), "libp2p": KneeSearch(1_000)}
    limits = {"tcp": 3_000, "libp2p": 1_500}
    ran = []
    for transport, rate in lockstep(searches):
        ran.append((transport, rate))
        searches[transport].record(rate, rate <= limits[transport])
    assert ran[:6] == [
        ("tcp", 1_000), ("libp2p", 1_000),
        ("libp2p", 2_000), ("tcp", 2_000),
        ("tcp", 4_000), ("libp2p", 1_500),
    ]  # fmt: skip
    # each search saw exactly the steps it would have alone
    assert [r for t, r in ran if t == "tcp"] == drive(
        KneeSearch(1_000, bisect_steps=1), lambda r: r <= 3_000
    )
    assert [r for t, r in ran if t == "libp2p"] == drive(KneeSearch(1_000), lambda r: r <= 1_500)
    assert searches["tcp"].knee == 3_000 and searches["libp2p"].knee == 1_500


def summary(**over: Any) -> dict[str, Any]:
    base = {
        "input_rate": 1_000,
        "tps": 995.0,
        "latency_p99_s": 0.2,
        "digest_agreement": {"ok": True},
        "drained": True,
        "problems": [],
    }
    return {**base, **over}


def test_a_step_holds_when_delivered_within_10_percent_and_p99_within_the_bound() -> None:
    assert judge_step(summary(), 0.5) == []
    assert judge_step(summary(tps=900.0), 0.5) == []
    assert judge_step(summary(tps=899.0), 0.5) == ["delivered 899 < 0.9 x 1,000 tx/s"]
    assert judge_step(summary(latency_p99_s=0.6), 0.5) == ["p99 0.600 s > 0.5 s"]
    failed = judge_step(summary(drained=False, digest_agreement={"ok": False}), 0.5)
    assert failed == ["collectors disagree", "not drained"]
