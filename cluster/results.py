"""One result and one summary schema for every run, whichever backend hosted it.

TPS and BPS count the transactions of batches that reached quorum, over the time from
the first client send to the last quorum, as the original's log parser. Latency is
per sample transaction: from the client's send to its batch reaching quorum at its
worker. `local` and `run` write the same keys: placement fields are None on the local
backend, and `scenario` is None outside a scenario. The report printed and the JSON
written under results/<timestamp>/ are made from the same dict, so they cannot disagree.

Every summary states the CPU the load used (`cpu`, see cluster/cpu.py), what the work
cost (CPU per worker-to-worker request and per MB), the machine's speed just after it
(`machine_speed`: SHA-512 on one core, which on a shared VM drifts), and whether the
run was *saturated*: the clients missed their rate, the committee delivered under 0.9 of
what they offered, or the machine was >= 90 % busy. A saturated run measured the
testbed (or the box), not the protocol, and its report says so first.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster.bench.cost import cost_figures
from faults.agreement import check_digest_agreement
from faults.report import saturation_banner
from faults.runner import ScenarioOutcome
from faults.series import percentile
from worker.keys import short_name

SUMMARY_FILE = "summary.json"
#: at or above this share of all cores over the load, the machine was the limit
SATURATED_CPU_SHARE = 0.9
#: delivered under this fraction of the offered rate: the committee fell behind
MIN_DELIVERED = 0.9
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
    #: `cluster.cpu.cpu_between` over the load ("load") and the load plus the drain ("run")
    cpu: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the machine's speed just after the drain (`cluster.bench.ceiling.machine_speed`)
    machine_speed: dict[str, Any] = field(default_factory=dict)
    #: what went wrong in the flow (a phase over its deadline, a backend error): run failed
    problems: list[str] = field(default_factory=list)
    #: a scenario's faults ran (set before it is judged): they may lower delivery by design
    faulted: bool = False

    @property
    def ok(self) -> bool:
        """The scenario's verdict if there was one, else the collectors' agreement; and
        the flow ran through, drained (unless no quorum was possible at all)."""
        if self.problems or not (self.drained or not quorum_possible(self.config)):
            return False
        if self.scenario is not None:
            return self.scenario.ok
        return bool(self.summary()["digest_agreement"]["ok"])

    def load_figures(self, figures: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The CPU the run used and whether it was saturated (also in scenario reports);
        `figures`: this run's `throughput`, if already computed."""
        figures = figures or throughput(self.workers, self.clients)
        load = self.cpu.get("load", {})
        reasons = saturation(
            missed_bursts=figures["missed_bursts"],
            delivered=figures["tps"],
            offered=sum(c["rate"] for c in self.clients),
            machine_share=load.get("machine_share"),
            judge_flow=not self.faulted and quorum_possible(self.config),
        )
        return {"cpu": self.cpu, "saturated": bool(reasons), "saturation": reasons}

    def summary(self) -> dict[str, Any]:
        figures = throughput(self.workers, self.clients)
        return {
            **self.config,
            "backend": self.backend,
            **figures,
            **self.load_figures(figures),
            "problems": self.problems,
            "machine_speed": self.machine_speed or None,
            "worker_to_worker_requests": sum(
                w.get("persisted", {}).get("peer", 0) for w in self.workers
            ),
            "drained": self.drained,
            "drained_at": self.drained_at,
            "digest_agreement": check_digest_agreement(self.workers, self.collectors),
            "per_worker": [{k: v for k, v in w.items() if k != "records"} for w in self.workers],
            "per_authority": per_authority(self.workers, self.homes),
            "placement_note": self.placement_note,
            "clients": len(self.clients),
            "scenario": self.scenario.to_json() if self.scenario else None,
        }


def quorum_possible(config: Mapping[str, Any]) -> bool:
    """Whether the authorities that boot can form a quorum (2f+1 of N, equal stake)."""
    n = config.get("authorities", 1)
    return n - config.get("faults", 0) >= 2 * n // 3 + 1


def saturation(
    *,
    missed_bursts: int,
    delivered: float,
    offered: float,
    machine_share: float | None,
    judge_flow: bool = True,
) -> list[str]:
    """Why a run's figures measure the testbed rather than the protocol (empty: they don't).

    `delivered` and `offered` in tx/s. `judge_flow` is off where the run's own faults may
    lower delivery and hold clients back by design (a scenario, or more than f authorities
    down): a worker that cannot reach quorum stops reading its client once its backlog is
    full, so late bursts there are the protocol's back-pressure, not the testbed's; the
    machine's CPU is judged either way."""
    reasons = []
    if judge_flow and missed_bursts > 0:
        reasons.append(f"clients missed their rate ({missed_bursts:,} late burst(s))")
    if judge_flow and offered > 0 and delivered < MIN_DELIVERED * offered:
        reasons.append(
            f"delivered {delivered:,.0f} of {offered:,.0f} tx/s offered "
            f"({delivered / offered:.2f} < {MIN_DELIVERED})"
        )
    if machine_share is not None and machine_share >= SATURATED_CPU_SHARE:
        reasons.append(f"machine CPU {machine_share:.0%} busy over the load")
    return reasons


def cpu_line(cpu: Mapping[str, Mapping[str, Any]]) -> str:
    """One line on the CPU over the load: the machine's share and the run's own seconds."""
    load = cpu.get("load") or {}
    if not load or load.get("machine_share") is None:
        return " CPU over the load: not measured"
    own = ""
    if load.get("run_cpu_s") is not None:
        own = (
            f"; this run's processes {load['run_cpu_s']:,.1f} CPU-s "
            f"({load['run_share']:.0%} of {load['cores']} cores, {load['processes']} processes)"
        )
    return f" CPU over the load: machine {load['machine_share']:.0%} of {load['cores']} cores{own}"


def cost_line(summary: Mapping[str, Any]) -> str:
    """What the work cost the machine, so runs of different N or load compare by cost."""
    cost = cost_figures(summary)
    per_request, per_mb = cost["cpu_ms_per_request"], cost["cpu_s_per_mb"]
    if per_request is None and per_mb is None:
        return " Cost: not measured"
    parts = []
    if per_request is not None:
        parts.append(
            f"{per_request:.2f} CPU-ms per worker-to-worker request ({cost['requests']:,})"
        )
    if per_mb is not None:
        parts.append(f"{per_mb:.2f} CPU-s per delivered MB")
    return " Cost: " + ", ".join(parts)


def speed_line(speed: Mapping[str, Any] | None) -> str:
    """This VM's speed drifts by a quarter within minutes: a CPU share or a cost means
    little without the machine's own speed at the time, read the same way every run."""
    if not speed:
        return " Machine speed after the load: not measured"
    return (
        f" Machine speed after the load: SHA-512 {speed['sha512_mb_s']:,.0f} MB/s on one core"
        " (compare runs by it)"
    )


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
        "bytes_quorum": size,
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
    banner = [saturation_banner(s["saturation"])] if s["saturated"] else []
    banner += [f"PROBLEM: {p}" for p in s["problems"]]
    lines = [
        *banner,
        rule,
        " SUMMARY:",
        rule,
        " + CONFIG:",
        f" Backend: {s['backend']}",
        f" Faults: {s['faults']} authority(ies)",
        f" Committee size: {s['authorities']} authorities",
        f" Worker(s) per authority: {s['workers']} worker(s)",
        f" Transport: {_transport(s)}",
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
        cpu_line(s["cpu"]),
        cost_line(s),
        speed_line(s.get("machine_speed")),
        f" Drained: {'yes' if s['drained'] else 'NO (batches still in flight at the end)'}",
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
    lines += banner
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


def _transport(s: Mapping[str, Any]) -> str:
    """The transport, with the security libp2p proposes first (older summaries lack it)."""
    security = s.get("libp2p_security")
    return f"libp2p over {security}" if s["transport"] == "libp2p" and security else s["transport"]
