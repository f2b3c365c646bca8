"""The issue's targets, judged on a bench's figures: each met, missed, or not measured."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Targets:
    #: libp2p knee / TCP knee at least this
    min_ratio: float = 0.9
    #: libp2p knee / the machine's ceiling (in tx/s) at least this
    min_ceiling_fraction: float = 0.5
    #: per-request CPU at the largest N / at the smallest N at most this
    max_cost_growth: float = 1.5


def judge_targets(bench: Mapping[str, Any], targets: Targets) -> list[dict[str, Any]]:
    """One row per target: name, value (None: not measured), target, ok (None: skipped)."""
    knees = bench["knees"]
    rows = []

    def row(name: str, value: float | None, target: float, at_least: bool) -> None:
        ok = None if value is None else (value >= target if at_least else value <= target)
        rows.append({"name": name, "value": value, "target": target, "ok": ok})

    row("libp2p knee / TCP knee", bench.get("ratio"), targets.min_ratio, True)
    libp2p = knees.get("libp2p")
    fraction = libp2p["against_ceiling"]["knee_fraction"] if libp2p else None
    row("libp2p knee / machine ceiling", fraction, targets.min_ceiling_fraction, True)
    for transport, growth in bench.get("cost_growth", {}).items():
        name = f"{transport} CPU per request, largest N / smallest"
        row(name, growth, targets.max_cost_growth, False)
    return rows
