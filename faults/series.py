"""Figures over quorum records: nearest-rank percentiles and the per-second series.

Pure functions, shared by the scenario report (per second) and the run summary
(latency percentiles), so the two agree on what a p99 is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def per_second(
    records: Iterable[Mapping[str, Any]], start: float, duration: float
) -> list[dict[str, float]]:
    """tx/s reaching quorum and seal-to-quorum latency p50/p99, second by second."""
    seconds = [
        {"t": float(s), "tps": 0.0, "batches": 0.0, "p50_s": 0.0, "p99_s": 0.0}
        for s in range(int(duration) + 1)
    ]
    lat: list[list[float]] = [[] for _ in seconds]
    for r in records:
        k = int(r["quorum_at"] - start)
        if 0 <= k < len(seconds):
            seconds[k]["tps"] += r["transactions"]
            seconds[k]["batches"] += 1
            lat[k].append(r["quorum_at"] - r["sealed_at"])
    for row, values in zip(seconds, lat, strict=True):
        row["p50_s"] = round(percentile(values, 50), 4)
        row["p99_s"] = round(percentile(values, 99), 4)
    return seconds
