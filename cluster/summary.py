"""The run summary, computed like the original's log parser, printed like its report.

TPS and BPS count the transactions of batches that reached quorum, over the time from
the first client send to the last quorum. Latency is per sample transaction: from the
client's send to its batch reaching quorum at its worker.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def sample_latencies(
    records: Iterable[Mapping[str, Any]], client_samples: Mapping[int, float]
) -> list[float]:
    out = []
    for record in records:
        for counter in record["samples"]:
            sent = client_samples.get(int(counter))
            if sent is not None:
                out.append(record["quorum_at"] - sent)
    return out


def summarize(
    config: Mapping[str, Any],
    workers: list[Mapping[str, Any]],
    clients: list[Mapping[str, Any]],
) -> dict[str, Any]:
    """`workers`: per worker, its stats plus `records`; `clients`: reports keyed by `target`."""
    by_target = {c["target"]: c for c in clients}
    starts = [c["started_at"] for c in clients if c["started_at"]]
    quorum_times = [r["quorum_at"] for w in workers for r in w["records"]]
    txs = sum(r["transactions"] for w in workers for r in w["records"])
    size = sum(r["size"] for w in workers for r in w["records"])
    window = (max(quorum_times) - min(starts)) if quorum_times and starts else 0.0
    latencies: list[float] = []
    for w in workers:
        client = by_target.get(w["transactions"])
        if client:
            samples = {int(k): v for k, v in client["samples"].items()}
            latencies += sample_latencies(w["records"], samples)
    tps = txs / window if window > 0 else 0.0
    return {
        **config,
        "tps": round(tps, 1),
        "bps": round(size / window, 1) if window > 0 else 0.0,
        "latency_p50_s": round(percentile(latencies, 50), 4),
        "latency_p99_s": round(percentile(latencies, 99), 4),
        "latency_mean_s": round(statistics.fmean(latencies), 4) if latencies else 0.0,
        "latency_samples": len(latencies),
        "transactions_sent": sum(c["sent"] for c in clients),
        "transactions_quorum": txs,
        "batches_quorum": sum(len(w["records"]) for w in workers),
        "window_s": round(window, 3),
        "missed_bursts": sum(c["missed_bursts"] for c in clients),
        "clients_missed_rate": any(c["missed_bursts"] for c in clients),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    s = summary
    lines = [
        "-----------------------------------------",
        " SUMMARY:",
        "-----------------------------------------",
        " + CONFIG:",
        f" Faults: {s.get('faults', 0)} node(s)",
        f" Committee size: {s['nodes']} node(s)",
        f" Worker(s) per node: {s['workers']} worker(s)",
        f" Transport: {s['transport']}",
        f" Input rate: {s['input_rate']:,} tx/s",
        f" Transaction size: {s['tx_size']:,} B",
        f" Execution time: {s['duration']:,} s",
        "",
        f" Batch size: {s['batch_size']:,} B",
        f" Max batch delay: {s['max_batch_delay']:,} ms",
        "",
        " + RESULTS:",
        f" Worker TPS: {round(s['tps']):,} tx/s",
        f" Worker BPS: {round(s['bps']):,} B/s",
        f" Quorum latency p50: {round(s['latency_p50_s'] * 1000):,} ms",
        f" Quorum latency p99: {round(s['latency_p99_s'] * 1000):,} ms",
        f" Batches reaching quorum: {s['batches_quorum']:,}",
    ]
    if s.get("clients_missed_rate"):
        lines.append(f" WARNING: clients missed their target rate ({s['missed_bursts']} bursts)")
    lines.append("-----------------------------------------")
    return "\n".join(lines)


def write_json(summary: Mapping[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True))
