"""The `run` summary: `local`'s keys and report, plus per-node figures and where they ran.

The JSON written under results/<timestamp>/ is the same dict the printed report is
made from, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster.summary import format_summary, summarize, write_json
from faults.agreement import check_digest_agreement
from worker.keys import short_name

SUMMARY_FILE = "summary.json"


def per_node_figures(
    workers: list[Mapping[str, Any]], homes: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """Per authority: batches sealed, acked by a quorum, and stored (own + peers')."""
    figures: dict[str, dict[str, Any]] = {}
    for w in workers:
        name = w["authority"]
        fig = figures.setdefault(
            name,
            {
                "authority": name,
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


def build_summary(
    config: Mapping[str, Any],
    workers: list[Mapping[str, Any]],
    clients: list[Mapping[str, Any]],
    collectors: Mapping[str, Mapping[str, Any]],
    homes: Mapping[str, Mapping[str, str]],
    drained: bool,
    placement_note: str | None,
) -> dict[str, Any]:
    summary = summarize(config, workers, clients)
    summary["drained"] = drained
    summary["digest_agreement"] = check_digest_agreement(
        workers, {name: c["digests"] for name, c in collectors.items()}
    )
    summary["per_worker"] = [{k: v for k, v in w.items() if k != "records"} for w in workers]
    summary["per_node"] = per_node_figures(workers, homes)
    summary["placement_note"] = placement_note
    summary["clients"] = len(clients)
    return summary


def format_run_summary(summary: Mapping[str, Any]) -> str:
    """`local`'s report, then per-node batches and the clients' missed-rate count."""
    lines = format_summary(summary).splitlines()
    closing = lines.pop()
    lines += ["", " + PER NODE (batches sealed / acked by quorum / stored):"]
    for fig in summary["per_node"]:
        lines.append(
            f" {short_name(fig['authority'])} on {fig.get('ray_node_ip', '?')} "
            f"[{fig['workers']} worker(s)]: {fig['batches_sealed']:,} / "
            f"{fig['batches_acked']:,} / {fig['batches_stored']:,}"
        )
    lines.append(
        f" Clients missed their target rate: {summary['missed_bursts']:,} burst(s) "
        f"({summary['clients']} client(s))"
    )
    if summary.get("placement_note"):
        lines.append(f" Note: {summary['placement_note']}")
    lines.append(closing)
    return "\n".join(lines)


def write_results(summary: Mapping[str, Any], root: str | Path = "results") -> Path:
    """results/<timestamp>/summary.json (a suffix keeps two runs in one second apart)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        directory = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            directory.mkdir()
            break
        except FileExistsError:
            n += 1
    path = directory / SUMMARY_FILE
    write_json(summary, path)
    return path
