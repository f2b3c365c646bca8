"""The two Narwhal Grafana dashboards, and the command that writes their JSON.

The JSON under `metrics/grafana/dashboards/` is committed output of this module, so a
Grafana can provision it without Python; `tests/metrics/test_dashboards.py` fails when
the two drift. Regenerate after changing a panel:

    python -m metrics.dashboards [OUT_DIR]

Panels come from `metrics.grafana_panels` and their PromQL from `metrics.promql`, so
every query follows the same conventions: the `${datasource}` variable on every panel
and target, `rate(...[$__rate_interval])`, and `=~` matchers on the template variables
(so a multi-value or "All" selection, and `.*` in `panel_queries`, work alike).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metrics.grafana_panels import (
    Q,
    base_dashboard,
    datasource_variable,
    faults_annotation,
    quantiles,
    query_variable,
    rate_and_bytes,
    size_heatmap,
    timeseries,
    to_dict,
    with_row,
)
from metrics.promql import gauge, increase, mean, quantile, rate, runnable

if TYPE_CHECKING:
    from grafana_foundation_sdk.builders.dashboard import Dashboard

#: Inside the package, so an installed (non-editable) package ships and finds them.
DASHBOARD_DIR = Path(__file__).parent / "grafana" / "dashboards"
OVERVIEW_UID = "narwhal-overview"
#: One authority's workers. The uid (and file name) predate the rule that "node" means a
#: Ray machine only; they stay, so that bookmarks and provisioned copies keep working.
AUTHORITY_UID = "narwhal-node"

#: Matchers per dashboard. Multi-value variables take `=~` (Grafana regex-escapes their
#: values, and "All" is `.*`); the authority dashboard's single authority takes `=`,
#: because Grafana does not escape single values and base64 keys may hold `+`.
OVERVIEW_SCOPE = 'authority=~"$authority"'
AUTHORITY_SCOPE = 'authority="$authority", worker=~"$worker"'


def overview() -> Dashboard:
    """The whole committee at a glance: throughput, latency, peers, failures and faults."""
    s = OVERVIEW_SCOPE
    authority = query_variable(
        "authority", "label_values(transactions_received_total, authority)", multi=True
    )
    throughput = [
        rate_and_bytes(
            "Input throughput",
            "Client transactions (and bytes) received by the selected workers.",
            "transactions_received_total",
            "transactions_received_bytes_total",
            s,
            (),
        ),
        rate_and_bytes(
            "Delivered throughput",
            "Transactions (and bytes) in own batches that reached a 2f+1 quorum of acks.",
            "quorum_transactions_total",
            "quorum_transaction_bytes_total",
            s,
            (),
        ),
    ]
    latency = [
        quantiles(
            "Seal-to-quorum latency",
            "From sealing an own batch to 2f+1 stake of acks, over all selected workers.",
            "batch_quorum_latency_seconds",
            s,
            (0.5, 0.9, 0.99),
        ),
        quantiles(
            "Client sample latency",
            "End to end: from the load client stamping a sample transaction to its quorum.",
            "client_sample_latency_seconds",
            s,
            (0.5, 0.99),
        ),
        timeseries(
            "Batches in flight",
            "Own batches sealed and still waiting for a quorum, per authority.",
            "short",
            [Q(gauge("parallel_worker_batches", s, ("authority",)), "{{authority}}")],
        ),
        timeseries(
            "Quorum failures by reason",
            "Own batches given up on: anti_quorum (too many peers failed for 2f+1) or timeout.",
            "ops",
            [Q(rate("quorum_failures_total", s, ("reason",)), "{{reason}}")],
        ),
    ]
    peers = [
        timeseries(
            "Acks by peer",
            "Batch acks received from each peer by the selected workers.",
            "reqps",
            [Q(rate("batch_acks_total", s, ("peer",)), "{{peer}}")],
        ),
        timeseries(
            "Request failures & retries by peer",
            "Batch sends that failed (by reason) and sends repeated, per peer.",
            "reqps",
            [
                Q(
                    rate("batch_request_failures_total", s, ("peer", "reason")),
                    "fail {{peer}} {{reason}}",
                ),
                Q(rate("batch_send_retries_total", s, ("peer",)), "retry {{peer}}"),
            ],
        ),
        timeseries(
            "Rejected messages by source and reason",
            "Inbound messages refused by the transport, client intake or processor.",
            "ops",
            [Q(rate("messages_rejected_total", s, ("source", "reason")), "{{source}} {{reason}}")],
        ),
        timeseries(
            "Connected peers",
            "Peers with a live link, per worker.",
            "short",
            [Q(gauge("connected_peers", s, ("authority", "worker")), "{{authority}}/{{worker}}")],
            step=True,
        ),
        timeseries(
            "Persisted batches by origin",
            "Batches written to the store: own batches and batches received from peers.",
            "ops",
            [Q(rate("batch_persisted_total", s, ("origin",)), "{{origin}}")],
        ),
        timeseries(
            "Faults active",
            "Workers with each fault kind active (the red Faults annotations mark the same spans).",
            "short",
            [Q(gauge("faults_active", s, ("kind",)), "{{kind}}")],
            step=True,
        ),
    ]
    dashboard = base_dashboard(
        OVERVIEW_UID,
        "Narwhal workers / Overview",
        "Throughput, latency, peer health and injected faults across the selected authorities.",
        [datasource_variable(), authority],
    ).annotation(faults_annotation(s))
    dashboard = with_row(dashboard, "Throughput", throughput)
    dashboard = with_row(dashboard, "Latency & quorum", latency)
    return with_row(dashboard, "Peers, failures & faults", peers)


def authority_workers() -> Dashboard:
    """One authority's workers in detail: batch making, quorum, per-peer links, internals."""
    s = AUTHORITY_SCOPE
    authority = query_variable(
        "authority", "label_values(transactions_received_total, authority)", multi=False
    )
    worker = query_variable(
        "worker",
        'label_values(transactions_received_total{authority="$authority"}, worker)',
        multi=True,
    )
    batches = [
        timeseries(
            "Sealed batches by reason",
            "Batches sealed because they were full (size) or their timer fired (timeout), "
            "and own batches that reached quorum.",
            "ops",
            [
                Q(rate("created_batch_size_bytes_count", s, ("reason",)), "sealed: {{reason}}"),
                Q(rate("quorum_batches_total", s), "reached quorum"),
            ],
        ),
        size_heatmap(
            "Sealed batch size distribution",
            "Sealed batches per size bucket (created_batch_size_bytes) per rate window.",
            "created_batch_size_bytes",
            s,
        ),
        quantiles(
            "Batch creation latency",
            "From a batch's first transaction to its seal, by seal reason.",
            "created_batch_latency_seconds",
            s,
            (0.5, 0.99),
            by=("reason",),
        ),
        rate_and_bytes(
            "Transactions received",
            "Client transactions (and bytes) received, per worker.",
            "transactions_received_total",
            "transactions_received_bytes_total",
            s,
            ("worker",),
        ),
    ]
    quorum = [
        quantiles(
            "Quorum latency",
            "From sealing an own batch to 2f+1 stake of acks.",
            "batch_quorum_latency_seconds",
            s,
            (0.5, 0.9, 0.99),
        ),
        timeseries(
            "Stake at quorum",
            "Stake counted (own included) when a batch reached quorum; the threshold is 2f+1.",
            "short",
            [
                Q(mean("batch_quorum_stake", s), "mean"),
                Q(quantile(0.99, "batch_quorum_stake", s), "p99"),
            ],
        ),
    ]
    peers = [
        quantiles(
            "Ack latency per peer",
            "From sending a batch to a peer until its ack.",
            "batch_ack_latency_seconds",
            s,
            (0.5, 0.99),
            by=("peer",),
        ),
        timeseries(
            "Acks, retries and failures per peer",
            "Acks received, sends repeated and sends failed (by reason), per peer.",
            "reqps",
            [
                Q(rate("batch_acks_total", s, ("peer",)), "ack {{peer}}"),
                Q(rate("batch_send_retries_total", s, ("peer",)), "retry {{peer}}"),
                Q(
                    rate("batch_request_failures_total", s, ("peer", "reason")),
                    "fail {{peer}} {{reason}}",
                ),
            ],
        ),
        timeseries(
            "Handshakes by result",
            "Peer handshakes per rate window: accepted or the rejection reason.",
            "short",
            [Q(increase("peer_handshakes_total", s, ("result",)), "{{result}}")],
        ),
        timeseries(
            "Rejected messages",
            "Inbound messages refused, by source and reason.",
            "ops",
            [Q(rate("messages_rejected_total", s, ("source", "reason")), "{{source}} {{reason}}")],
        ),
    ]
    internals = [
        timeseries(
            "Queue depths",
            "Entries waiting in the worker's internal queues (read at scrape time).",
            "short",
            [Q(gauge("queue_depth", s, ("worker", "queue"), agg="max"), "{{worker}} {{queue}}")],
        ),
        timeseries(
            "Primary reports by kind",
            "Digests reported to the primary: our_batch (own) or others_batch (peers').",
            "ops",
            [Q(rate("primary_reports_total", s, ("kind",)), "{{kind}}")],
        ),
    ]
    dashboard = base_dashboard(
        AUTHORITY_UID,
        "Narwhal workers / Node",
        "One authority's workers: batch making, quorum, per-peer links and internal queues.",
        [datasource_variable(), authority, worker],
    ).annotation(faults_annotation(s))
    dashboard = with_row(dashboard, "Batches", batches)
    dashboard = with_row(dashboard, "Quorum", quorum)
    dashboard = with_row(dashboard, "Peers", peers)
    return with_row(dashboard, "Internals", internals)


# --- output ---------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by uid."""
    built = [to_dict(overview()), to_dict(authority_workers())]
    return {d["uid"]: d for d in built}


def iter_panels(dashboard: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every non-row panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every target, template variables as written."""
    return [
        (uid, panel["title"], target["expr"])
        for uid, dashboard in dashboards().items()
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def annotation_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, annotation name, expr), template variables as written."""
    return [
        (uid, annotation["name"], annotation["expr"])
        for uid, dashboard in dashboards().items()
        for annotation in dashboard.get("annotations", {}).get("list", [])
        if "expr" in annotation
    ]


def panel_queries() -> list[tuple[str, str, str]]:
    """Like `queries` (plus the annotation queries, titled `annotation: NAME`), runnable."""
    annotations = [(uid, f"annotation: {name}", e) for uid, name, e in annotation_queries()]
    return [(uid, title, runnable(expr)) for uid, title, expr in [*queries(), *annotations]]


def render(dashboard: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def write(out_dir: Path = DASHBOARD_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid, dashboard in dashboards().items():
        path = out_dir / f"{uid}.json"
        path.write_text(render(dashboard))
        paths.append(path)
    return paths


def main(argv: Sequence[str] = ()) -> None:
    for path in write(Path(argv[0]) if argv else DASHBOARD_DIR):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
