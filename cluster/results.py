"""One result and one summary schema for every run, whichever backend hosted it.

TPS and BPS count the transactions of batches that reached quorum, over the time from
the first client send to the last quorum, as the original's log parser. Latency is
per sample transaction: from the client's send to its batch reaching quorum at its
worker. `local` and `run` write the same keys: placement fields are None on the local
backend, and `scenario` is None outside a scenario. The report printed and the JSON
written under results/<timestamp>/ are made from the same dict, so they cannot disagree.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from faults.agreement import check_digest_agreement
from faults.runner import ScenarioOutcome
from faults.series import percentile
from worker.keys import short_name

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.txt"


@dataclass
class RunResult:
    """What a run collected: workers' stats and records, clients' reports, collectors."""

    backend: str
    config: dict[str, Any]
    workers: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    #: authority -> its collector's `CollectedDigests.to_json()`
    collectors: dict[str, dict[str, Any]]
    #: authority -> where it ran: {"ray_node_id", "ray_node_ip"} (None on the local backend)
    homes: dict[str, dict[str, Any]] = field(default_factory=dict)
    drained: bool = False
    drained_at: float = 0.0
    placement_note: str | None = None
    scenario: ScenarioOutcome | None = None

    @property
    def ok(self) -> bool:
        """The scenario's verdict if there was one, else the collectors' agreement."""
        if self.scenario is not None:
            return self.scenario.ok
        return bool(self.summary()["digest_agreement"]["ok"])

    def summary(self) -> dict[str, Any]:
        return {
            **self.config,
            "backend": self.backend,
            **throughput(self.workers, self.clients),
            "drained": self.drained,
            "drained_at": self.drained_at,
            "digest_agreement": check_digest_agreement(self.workers, self.collectors),
            "per_worker": [{k: v for k, v in w.items() if k != "records"} for w in self.workers],
            "per_authority": per_authority(self.workers, self.homes),
            "placement_note": self.placement_note,
            "clients": len(self.clients),
            "scenario": self.scenario.to_json() if self.scenario else None,
        }


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


def throughput(
    workers: list[Mapping[str, Any]], clients: list[Mapping[str, Any]]
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
    return {
        "tps": round(txs / window, 1) if window > 0 else 0.0,
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


def per_authority(
    workers: list[Mapping[str, Any]], homes: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per authority: where it ran; batches sealed, acked by a quorum, stored (own + peers')."""
    figures: dict[str, dict[str, Any]] = {}
    for w in workers:
        name = w["authority"]
        fig = figures.setdefault(
            name,
            {
                "authority": name,
                "ray_node_id": None,
                "ray_node_ip": None,
                **homes.get(name, {}),
                "workers": 0,
                "worker_nodes": [],
                "transactions_received": 0,
                "batches_sealed": 0,
                "batches_acked": 0,
                "batches_stored": 0,
            },
        )
        fig["workers"] += 1
        if w.get("ray_node_id") and w["ray_node_id"] not in fig["worker_nodes"]:
            fig["worker_nodes"].append(w["ray_node_id"])
        fig["transactions_received"] += w["transactions_received"]
        fig["batches_sealed"] += sum(w["batches_sealed"].values())
        fig["batches_acked"] += w["batches_quorum"]
        fig["batches_stored"] += sum(w["persisted"].values())
    return [figures[name] for name in sorted(figures)]


def format_report(summary: Mapping[str, Any]) -> str:
    """The original benchmark's report, then per-authority batches and the clients."""
    s = summary
    rule = "-----------------------------------------"
    lines = [
        rule,
        " SUMMARY:",
        rule,
        " + CONFIG:",
        f" Backend: {s['backend']}",
        f" Faults: {s['faults']} authority(ies)",
        f" Committee size: {s['authorities']} authorities",
        f" Worker(s) per authority: {s['workers']} worker(s)",
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
        "",
        " + PER AUTHORITY (batches sealed / acked by quorum / stored):",
    ]
    for fig in s["per_authority"]:
        lines.append(
            f" {short_name(fig['authority'])} on {fig['ray_node_ip'] or 'this machine'} "
            f"[{fig['workers']} worker(s)]: {fig['batches_sealed']:,} / "
            f"{fig['batches_acked']:,} / {fig['batches_stored']:,}"
        )
    lines.append(
        f" Clients missed their target rate: {s['missed_bursts']:,} burst(s) "
        f"({s['clients']} client(s))"
    )
    if s["placement_note"]:
        lines.append(f" Note: {s['placement_note']}")
    lines.append(rule)
    return "\n".join(lines)


def write_json(summary: Mapping[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True))


def new_run_dir(root: str | Path = "results", label: str | None = None) -> Path:
    """results/<timestamp>[-<label>]/, created (a suffix keeps two runs in one second apart)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{label}" if label else "")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        directory = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            directory.mkdir()
            return directory
        except FileExistsError:
            n += 1


def write_results(summary: Mapping[str, Any], run_dir: Path) -> Path:
    """summary.json and the printed report into the run's directory; returns the JSON's path."""
    path = run_dir / SUMMARY_FILE
    write_json(summary, path)
    (run_dir / REPORT_FILE).write_text(format_report(summary) + "\n")
    return path
