"""What a run's work costs in CPU: seconds per delivered MB and per worker-to-worker request.

The CPU is the run's own processes' (cluster/cpu.py) from the load's start to the end of
the drain, so the work still in flight at the end of the load is paid for too. A
worker-to-worker request is a peer's batch stored and acked (`persisted["peer"]`).
Measured at a fixed low rate per worker for several committee sizes, so the growth of
the cost with N shows, not the load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def cost_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The cost of one run, from its summary (figures are None when not measured)."""
    cpu = (summary.get("cpu") or {}).get("run") or {}
    cpu_s = cpu.get("run_cpu_s")
    mb = summary["bytes_quorum"] / 1e6
    requests = summary["worker_to_worker_requests"]
    return {
        "authorities": summary["authorities"],
        "input_rate": summary["input_rate"],
        "cpu_s": cpu_s,
        "delivered_mb": round(mb, 3),
        "requests": requests,
        "cpu_s_per_mb": round(cpu_s / mb, 4) if cpu_s is not None and mb else None,
        "cpu_ms_per_request": (
            round(cpu_s / requests * 1e3, 4) if cpu_s is not None and requests else None
        ),
        "machine_share": (summary.get("cpu") or {}).get("load", {}).get("machine_share"),
        "saturated": summary["saturated"],
    }


def cost_growth(points: Sequence[Mapping[str, Any]]) -> float | None:
    """Per-request cost at the largest committee over the smallest (None: not measured)."""
    measured = [p for p in points if p["cpu_ms_per_request"]]
    if len(measured) < 2:
        return None
    small = min(measured, key=lambda p: p["authorities"])
    large = max(measured, key=lambda p: p["authorities"])
    return round(large["cpu_ms_per_request"] / small["cpu_ms_per_request"], 3)
