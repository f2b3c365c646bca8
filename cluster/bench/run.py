"""Driving the bench: knee searches per transport, the ceiling and the cost points, all
on the local backend (one process per authority) in one run, assembled as one dict."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from cluster.backends.local import LocalBackend
from cluster.bench.ceiling import against_ceiling, measure_ceiling
from cluster.bench.cost import cost_figures, cost_growth
from cluster.bench.knee import KneeSearch, judge_step
from cluster.experiment import ExperimentConfig, run_experiment
from worker.config import Parameters

log = logging.getLogger(__name__)
Note = Callable[[str], None]


@dataclass(frozen=True)
class BenchSettings:
    authorities: int = 4
    workers: int = 1
    tx_size: int = 512
    transports: tuple[str, ...] = ("tcp", "libp2p")
    #: seconds of load per knee step
    duration: float = 10.0
    drain_timeout: float = 10.0
    start_rate: int = 1_000
    max_rate: int = 256_000
    bisect_steps: int = 3
    max_p99_s: float = 0.5
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
        params=Parameters(transport=transport),
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
    }


def knee(s: BenchSettings, transport: str, note: Note) -> dict[str, Any]:
    """Search the knee of one transport; every step's figures kept."""
    search = KneeSearch(s.start_rate, s.max_rate, s.bisect_steps)
    steps = []
    while (rate := search.next_rate()) is not None:
        summary = _run(s, transport, s.authorities, rate, s.duration)
        reasons = judge_step(summary, s.max_p99_s)
        search.record(rate, not reasons)
        step = step_figures(rate, summary, reasons)
        steps.append(step)
        note(_step_line(transport, step))
    return {"knee_tx_s": search.knee, "capped": search.capped, "steps": steps}


def _step_line(transport: str, step: dict[str, Any]) -> str:
    share = step["machine_share"]
    cpu = f"{share:.0%}" if share is not None else "?"
    verdict = "held" if step["ok"] else "; ".join(step["reasons"])
    return (
        f"{transport:<7} {step['rate']:>8,} tx/s -> {step['tps']:>9,.0f} tx/s  "
        f"p50 {step['latency_p50_s'] * 1e3:>6.0f} ms  p99 {step['latency_p99_s'] * 1e3:>6.0f} ms"
        f"  CPU {cpu:>4}  {verdict}"
    )


def cost(s: BenchSettings, transport: str, note: Note) -> list[dict[str, Any]]:
    points = []
    for n in s.cost_authorities:
        rate = s.cost_rate_per_worker * n * s.workers
        point = cost_figures(_run(s, transport, n, rate, s.cost_duration))
        points.append(point)
        per_request = point["cpu_ms_per_request"]
        note(f"cost {transport:<7} N={n:<3} {rate:>6,} tx/s: {per_request} CPU-ms per request")
    return points


def run_bench(s: BenchSettings, note: Note = log.info) -> dict[str, Any]:
    """The whole bench; see `cluster.cli.bench` for what is printed of it."""
    batch_size = Parameters().batch_size
    note(f"ceiling: {s.ceiling_seconds:g} s per kind of work, {batch_size:,}-byte buffers")
    ceiling = measure_ceiling(batch_size, s.ceiling_seconds)
    knees = {}
    for transport in s.transports:
        found = knee(s, transport, note)
        found["against_ceiling"] = against_ceiling(
            found["knee_tx_s"], s.tx_size, s.authorities, transport, ceiling
        )
        knees[transport] = found
    ratio = None
    if "tcp" in knees and "libp2p" in knees and knees["tcp"]["knee_tx_s"]:
        ratio = round(knees["libp2p"]["knee_tx_s"] / knees["tcp"]["knee_tx_s"], 3)
    costs = {t: cost(s, t, note) for t in s.transports}
    return {
        "settings": {**asdict(s), "transports": list(s.transports)},
        "ceiling": ceiling,
        "knees": knees,
        "ratio": ratio,
        "cost": costs,
        "cost_growth": {t: cost_growth(points) for t, points in costs.items()},
    }
