"""Driving the bench: knee searches per transport, the ceiling and the cost points, all
on the local backend (one process per authority) in one run, assembled as one dict.
The transports take turns step by step, so a drift of the machine's speed hits both."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from cluster.backends.local import LocalBackend
from cluster.bench.ceiling import aead_only_ratio, against_ceiling, measure_ceiling
from cluster.bench.cost import cost_figures, cost_growth
from cluster.bench.knee import KneeSearch, judge_step, lockstep
from cluster.experiment import HARNESS_PARAMETERS, ExperimentConfig, run_experiment
from worker.config import DEFAULT_LIBP2P_SECURITY, Libp2pSecurity, Parameters

log = logging.getLogger(__name__)
Note = Callable[[str], None]


@dataclass(frozen=True)
class BenchSettings:
    authorities: int = 4
    workers: int = 1
    tx_size: int = 512
    transports: tuple[str, ...] = ("tcp", "libp2p")
    #: libp2p's security protocol (its AEAD is also the ceiling's)
    security: Libp2pSecurity = DEFAULT_LIBP2P_SECURITY
    #: seconds of load per knee step
    duration: float = 10.0
    drain_timeout: float = 10.0
    start_rate: int = 1_000
    max_rate: int = 512_000
    bisect_steps: int = 3
    max_p99_s: float = 0.5
    #: lockstep knee searches, one after the other; the median of each figure counts
    searches: int = 1
    #: committee sizes of the cost figure, each at `cost_rate_per_worker` tx/s per worker
    cost_authorities: tuple[int, ...] = (4, 7, 10)
    cost_rate_per_worker: int = 100
    cost_duration: float = 10.0
    #: long enough for the store's figure to include the disk's sustained rate
    ceiling_seconds: float = 3.0

    def quick(self) -> BenchSettings:
        """Tiny durations and few steps: checks the bench's shape, not its figures."""
        return replace(
            self,
            duration=1.0,
            drain_timeout=5.0,
            start_rate=400,
            max_rate=800,
            bisect_steps=1,
            cost_authorities=self.cost_authorities[:1],
            cost_duration=1.0,
            ceiling_seconds=0.05,
        )


def _run(
    s: BenchSettings, transport: str, authorities: int, rate: int, duration: float
) -> dict[str, Any]:
    cfg = ExperimentConfig(
        authorities=authorities,
        workers=s.workers,
        rate=rate,
        tx_size=s.tx_size,
        duration=duration,
        params=Parameters(**HARNESS_PARAMETERS, transport=transport, libp2p_security=s.security),
        drain_timeout=s.drain_timeout,
    )
    return run_experiment(cfg, LocalBackend()).summary()


def step_figures(rate: int, summary: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    """One search step's figures from its run summary (shared with bench/pipeline.py)."""
    load = summary["cpu"]["load"]
    return {
        "rate": rate,
        "ok": not reasons,
        "reasons": reasons,
        "tps": summary["tps"],
        "latency_p50_s": summary["latency_p50_s"],
        "latency_p99_s": summary["latency_p99_s"],
        "missed_bursts": summary["missed_bursts"],
        "machine_share": load["machine_share"],
        "run_cpu_s": load["run_cpu_s"],
        "processes": load["processes"],
        "saturated": summary["saturated"],
        "machine_speed": summary.get("machine_speed"),
    }


def knees(s: BenchSettings, note: Note) -> dict[str, dict[str, Any]]:
    """Every transport's knee, the searches in lockstep: a step of each per round, the
    order alternating round by round (A B, B A, ...). This VM's speed drifts by a
    quarter within minutes, and a search takes several: run one after the other, the two
    knees met different machines and their ratio measured the drift.

    With `searches` > 1 the lockstep search runs that many times; each transport's knee
    is then the median (low) of its knees, and `knees` lists them all. One search's
    knee hangs on single steps near the edge, where one p99 spike decides: two
    searches in a row on this VM found TCP knees of 178,000 and 220,000 tx/s."""
    found: dict[str, dict[str, Any]] = {
        t: {"knee_tx_s": 0, "knees": [], "at_cap": [], "steps": []} for t in s.transports
    }
    for number in range(1, s.searches + 1):
        if s.searches > 1:
            note(f"search {number} of {s.searches}")
        searches = {t: KneeSearch(s.start_rate, s.max_rate, s.bisect_steps) for t in s.transports}
        for transport, rate in lockstep(searches):
            summary = _run(s, transport, s.authorities, rate, s.duration)
            reasons = judge_step(summary, s.max_p99_s)
            searches[transport].record(rate, not reasons)
            step = step_figures(rate, summary, reasons) | {"search": number}
            found[transport]["steps"].append(step)
            note(_step_line(transport, step))
        for transport, search in searches.items():
            f = found[transport]
            f["knees"].append(search.knee)
            f["at_cap"].append(search.capped)
    for f in found.values():
        f["knee_tx_s"] = statistics.median_low(f["knees"])
        f["capped"] = all(f["at_cap"])  # every search held every rate up to the cap
    return found


def knee_ratios(found: dict[str, dict[str, Any]]) -> list[float]:
    """libp2p knee / TCP knee of each search (their steps met the same machine). A
    search where either knee is the cap has none: the cap is not a knee, so its ratio
    would be a bound, not a measurement."""
    if "tcp" not in found or "libp2p" not in found:
        return []
    knees = zip(found["libp2p"]["knees"], found["tcp"]["knees"], _at_cap(found), strict=True)
    return [round(libp2p / tcp, 3) for libp2p, tcp, capped in knees if tcp and not capped]


def searches_at_cap(found: dict[str, dict[str, Any]]) -> int:
    """Searches left out of the ratio because a knee there was the cap (0 without both
    transports: there is no ratio then)."""
    if "tcp" not in found or "libp2p" not in found:
        return 0
    return sum(_at_cap(found))


def _at_cap(found: dict[str, dict[str, Any]]) -> list[bool]:
    """Per search: TCP's or libp2p's knee there was the cap."""
    count = len(found["tcp"]["knees"])
    flags = [found[t].get("at_cap", [False] * count) for t in ("tcp", "libp2p")]
    return [any(column) for column in zip(*flags, strict=True)]


def _step_line(transport: str, step: dict[str, Any]) -> str:
    share = step["machine_share"]
    cpu = f"{share:.0%}" if share is not None else "?"
    verdict = "held" if step["ok"] else "; ".join(step["reasons"])
    return (
        f"{transport:<7} {step['rate']:>8,} tx/s -> {step['tps']:>9,.0f} tx/s  "
        f"p50 {step['latency_p50_s'] * 1e3:>6.0f} ms  p99 {step['latency_p99_s'] * 1e3:>6.0f} ms"
        f"  CPU {cpu:>4}  {verdict}"
    )


def aead_bounds(
    s: BenchSettings, found: dict[str, dict[str, Any]], ceiling: dict[str, Any]
) -> list[float]:
    """Per search: the libp2p/TCP ratio the AEAD alone would allow (`aead_only_ratio`),
    from TCP's knee step in that search."""
    if "tcp" not in found or "libp2p" not in found:
        return []
    bounds = []
    for number, knee in enumerate(found["tcp"]["knees"], start=1):
        shares = [
            step["machine_share"]
            for step in found["tcp"]["steps"]
            if step["search"] == number and step["rate"] == knee and step["ok"]
        ]
        bound = (
            aead_only_ratio(knee, shares[0], s.tx_size, s.authorities, ceiling) if shares else None
        )
        if bound is not None:
            bounds.append(bound)
    return bounds


def costs(s: BenchSettings, note: Note) -> dict[str, list[dict[str, Any]]]:
    """The cost points, by committee size, the transports in alternating order (as the
    knees, so both meet the same machine)."""
    points: dict[str, list[dict[str, Any]]] = {t: [] for t in s.transports}
    order = list(s.transports)
    for n in s.cost_authorities:
        rate = s.cost_rate_per_worker * n * s.workers
        for transport in order:
            point = cost_figures(_run(s, transport, n, rate, s.cost_duration))
            points[transport].append(point)
            per_request = point["cpu_ms_per_request"]
            note(f"cost {transport:<7} N={n:<3} {rate:>6,} tx/s: {per_request} CPU-ms per request")
        order.reverse()
    return points


def run_bench(s: BenchSettings, note: Note = log.info) -> dict[str, Any]:
    """The whole bench; see `cluster.cli.bench` for what is printed of it."""
    batch_size = Parameters().batch_size
    note(f"ceiling: {s.ceiling_seconds:g} s per kind of work, {batch_size:,}-byte buffers")
    ceiling = measure_ceiling(batch_size, s.ceiling_seconds, s.security)
    found = knees(s, note)
    for transport, knee in found.items():
        knee["against_ceiling"] = against_ceiling(
            knee["knee_tx_s"], s.tx_size, s.authorities, transport, ceiling
        )
    ratios = knee_ratios(found)
    bounds = aead_bounds(s, found, ceiling)
    points = costs(s, note)
    return {
        "settings": {**asdict(s), "transports": list(s.transports)},
        "ceiling": ceiling,
        "knees": found,
        #: the median of the searches' own ratios (paired, as the steps were)
        "ratio": round(statistics.median(ratios), 3) if ratios else None,
        "ratios": ratios,
        #: searches left out of the ratio: a knee there was the cap (`max_rate`)
        "searches_at_cap": searches_at_cap(found),
        #: the ratio if the AEAD were libp2p's only extra cost (median over the searches)
        "aead_only_ratio": round(statistics.median(bounds), 3) if bounds else None,
        "cost": points,
        "cost_growth": {t: cost_growth(p) for t, p in points.items()},
    }
