"""The knee search, as the Narwhal orchestrator's search mode, with no I/O of its own.

The knee is the highest input rate the committee *sustains*: delivered TPS within 10 %
of the input and the p99 sample latency within a bound (and the run drained, its
collectors agreed, its flow ran through). CPU saturation is reported at every step but
is not a criterion: on one box the knee is where the CPU runs out, and how much of that
CPU the protocol's own work needs is what the ceiling comparison (`ceiling.py`) shows.

The search doubles the rate from `start` until a rate fails (halving instead when
`start` itself fails), then bisects between the last good and the first bad rate for a
few steps. The caller runs each proposed rate and records whether it held; `lockstep`
interleaves several searches (one per transport) step by step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: delivered TPS at or above this fraction of the input: the rate is sustained
DELIVERED = 0.9


def judge_step(summary: Mapping[str, Any], max_p99_s: float) -> list[str]:
    """Why a run did not sustain its input rate (empty: it did). `summary`: a run's."""
    reasons = []
    rate = summary["input_rate"]
    if summary["tps"] < DELIVERED * rate:
        reasons.append(f"delivered {summary['tps']:,.0f} < {DELIVERED} x {rate:,} tx/s")
    if summary["latency_p99_s"] > max_p99_s:
        reasons.append(f"p99 {summary['latency_p99_s']:.3f} s > {max_p99_s:g} s")
    if not summary["digest_agreement"]["ok"]:
        reasons.append("collectors disagree")
    if not summary["drained"]:
        reasons.append("not drained")
    reasons += summary.get("problems", [])
    return reasons


@dataclass
class KneeSearch:
    """Double from `start` up to `max_rate`, then bisect `bisect_steps` times."""

    start: int
    max_rate: int = 1_000_000
    bisect_steps: int = 3
    min_rate: int = 1
    #: highest rate that held (0: none yet) and lowest that failed (None: none yet)
    good: int = 0
    bad: int | None = None
    history: list[tuple[int, bool]] = field(default_factory=list)
    _bisected: int = 0

    def next_rate(self) -> int | None:
        """The next rate to run, or None when the search is over."""
        if not self.history:
            return min(self.start, self.max_rate)
        last = self.history[-1][0]
        if self.bad is None:  # every rate held so far: double, up to the cap
            return None if last >= self.max_rate else min(2 * last, self.max_rate)
        if self.good == 0:  # even the start failed: halve until one holds
            half = last // 2
            return half if half >= self.min_rate else None
        mid = (self.good + self.bad) // 2
        if self._bisected >= self.bisect_steps or not self.good < mid < self.bad:
            return None
        return mid

    def record(self, rate: int, ok: bool) -> None:
        if self.good and self.bad is not None and self.good < rate < self.bad:
            self._bisected += 1
        self.history.append((rate, ok))
        if ok:
            self.good = max(self.good, rate)
        else:
            self.bad = rate if self.bad is None else min(self.bad, rate)

    @property
    def knee(self) -> int:
        """The highest rate that held (0 if none did)."""
        return self.good

    @property
    def capped(self) -> bool:
        """The knee is the cap: the committee held every rate tried, up to `max_rate`."""
        return self.bad is None and self.good >= self.max_rate


def lockstep(searches: Mapping[str, KneeSearch]) -> Iterator[tuple[str, int]]:
    """(transport, rate) to run next, a step of each unfinished search per round, the
    order reversed every round; a search must be told each result before the next."""
    order = list(searches)
    while True:
        proposed = [(t, rate) for t in order if (rate := searches[t].next_rate()) is not None]
        if not proposed:
            return
        yield from proposed
        order.reverse()
