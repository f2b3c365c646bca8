"""Grafana dashboards for the worker metrics, generated as code.

The JSON under `metrics/grafana/dashboards/` is committed output of this module, so a
Grafana can provision it without Python; `tests/test_dashboards.py` fails when the two
drift. Regenerate after changing a panel:

    python -m metrics.dashboards [OUT_DIR]

Panels are built by a few helpers (rates, histogram quantiles, gauges) so that every
query follows the same conventions: the `${datasource}` variable on every panel and
target, `rate(...[$__rate_interval])`, and `=~` matchers on the template variables
(so a multi-value or "All" selection, and `.*` in `panel_queries`, work alike).
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # The SDK marks the classic dashboard model deprecated in favour of the v2 schema, which
    # needs Grafana 12's new dashboard API; file provisioning and JSON import read classic.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_b
    from grafana_foundation_sdk.builders import dashboard as dash_b
    from grafana_foundation_sdk.builders import heatmap as heatmap_b
    from grafana_foundation_sdk.builders import prometheus as prom_b
    from grafana_foundation_sdk.builders import timeseries as ts_b
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as common_m
    from grafana_foundation_sdk.models import dashboard as dash_m
    from grafana_foundation_sdk.models import heatmap as heatmap_m
    from grafana_foundation_sdk.models import prometheus as prom_m

DASHBOARD_DIR = Path(__file__).parent / "grafana" / "dashboards"
OVERVIEW_UID = "narwhal-overview"
NODE_UID = "narwhal-node"
TAGS = ["narwhal", "narwhal-testbed"]

#: Every panel, target, variable and annotation queries the data source picked here.
DATASOURCE = common_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"

#: Matchers per dashboard. Multi-value variables take `=~` (Grafana regex-escapes their
#: values, and "All" is `.*`); the node dashboard's single authority takes `=`, because
#: Grafana does not escape single values and base64 keys may hold `+`.
OVERVIEW_SCOPE = 'authority=~"$authority"'
NODE_SCOPE = 'authority="$authority", worker=~"$worker"'

#: What `panel_queries` puts in place of the template variables to get runnable PromQL.
RUNNABLE_VARS = {"__rate_interval": "1m", "authority": ".*", "worker": ".*"}


# --- PromQL ---------------------------------------------------------------------------


def _by(labels: Sequence[str]) -> str:
    return f" by ({', '.join(labels)}) " if labels else ""


def rate(metric: str, scope: str, by: Sequence[str] = ()) -> str:
    """Per-second rate of a counter, summed over everything but `by`."""
    return f"sum{_by(by)}(rate({metric}{{{scope}}}{RATE}))"


def increase(metric: str, scope: str, by: Sequence[str] = ()) -> str:
    """Events per rate window: for rare events (handshakes) whose per-second rate reads badly."""
    return f"sum{_by(by)}(increase({metric}{{{scope}}}{RATE}))"


def gauge(metric: str, scope: str, by: Sequence[str] = (), agg: str = "sum") -> str:
    return f"{agg}{_by(by)}({metric}{{{scope}}})"


def quantile(q: float, histogram: str, scope: str, by: Sequence[str] = ()) -> str:
    """`q`-quantile of a histogram over the rate window, aggregated over all but `by`."""
    buckets = rate(f"{histogram}_bucket", scope, ("le", *by))
    return f"histogram_quantile({q}, {buckets})"


def mean(histogram: str, scope: str, by: Sequence[str] = ()) -> str:
    """Mean observation over the rate window (`_sum` / `_count`)."""
    return f"{rate(f'{histogram}_sum', scope, by)} / {rate(f'{histogram}_count', scope, by)}"


# --- panels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """One target: a PromQL expression and its legend."""

    expr: str
    legend: str


def _targets(queries: Sequence[Q]) -> list[prom_b.Dataquery]:
    return [
        prom_b.Dataquery()
        .datasource(DATASOURCE)
        .ref_id(chr(ord("A") + i))
        .expr(q.expr)
        .legend_format(q.legend)
        .editor_mode(prom_m.QueryEditorMode.CODE)
        .range()
        for i, q in enumerate(queries)
    ]


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    width: int = 12,
    height: int = 8,
    step: bool = False,
) -> ts_b.Panel:
    """The common panel: lines from zero, multi tooltip sorted high to low, legend below."""
    panel = (
        ts_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(height)
        .fill_opacity(10)
        .show_points(common_m.VisibilityMode.NEVER)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_m.LegendDisplayMode.LIST)
            .placement(common_m.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common_m.TooltipDisplayMode.MULTI)
            .sort(common_m.SortOrder.DESCENDING)
        )
        .targets(_targets(queries))
    )
    if step:
        panel = panel.line_interpolation(common_m.LineInterpolation.STEP_AFTER)
    return panel


def rate_and_bytes(
    title: str, description: str, counter: str, bytes_counter: str, scope: str, by: Sequence[str]
) -> ts_b.Panel:
    """Transactions/s on the left axis and bytes/s on the right, from a pair of counters."""
    label = " ".join(f"{{{{{label}}}}}" for label in by) or "total"
    return timeseries(
        title,
        description,
        "ops",
        [
            Q(rate(counter, scope, by), f"tx/s {label}"),
            Q(rate(bytes_counter, scope, by), f"B/s {label}"),
        ],
    ).override_by_query(
        "B",
        [
            dash_m.DynamicConfigValue(id_val="unit", value="Bps"),
            dash_m.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        ],
    )


def quantiles(
    title: str,
    description: str,
    histogram: str,
    scope: str,
    qs: Iterable[float],
    by: Sequence[str] = (),
    unit: str = "s",
) -> ts_b.Panel:
    """One line per quantile (and per `by` group) of a histogram."""
    suffix = "".join(f" {{{{{label}}}}}" for label in by)
    queries = [Q(quantile(q, histogram, scope, by), f"p{round(q * 100)}{suffix}") for q in qs]
    return timeseries(title, description, unit, queries)


def size_heatmap(title: str, description: str, histogram: str, scope: str) -> heatmap_b.Panel:
    """Bucket counts per rate window as a heatmap (Prometheus buckets, no re-bucketing)."""
    target = (
        prom_b.Dataquery()
        .datasource(DATASOURCE)
        .ref_id("A")
        .expr(increase(f"{histogram}_bucket", scope, ("le",)))
        .legend_format("{{le}}")
        .format(prom_m.PromQueryFormat.HEATMAP)
        .editor_mode(prom_m.QueryEditorMode.CODE)
        .range()
    )
    return (
        heatmap_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .calculate(False)
        .y_axis(heatmap_b.YAxisConfig().unit("bytes"))
        .color(
            heatmap_b.HeatmapColorOptions()
            .mode(heatmap_m.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .steps(64)
        )
        .show_legend()
        .targets([target])
    )


def with_row(
    dashboard: dash_b.Dashboard, title: str, panels: Iterable[Builder[dash_m.Panel]]
) -> dash_b.Dashboard:
    """An expanded row followed by its panels (the SDK's `Row.with_panel` collapses it)."""
    dashboard = dashboard.with_row(dash_b.Row(title))
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard


# --- dashboards -----------------------------------------------------------------------


def _datasource_variable() -> dash_b.DatasourceVariable:
    return dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")


def _query_variable(name: str, query: str, *, multi: bool) -> dash_b.QueryVariable:
    variable = (
        dash_b.QueryVariable(name)
        .label(name.capitalize())
        .datasource(DATASOURCE)
        .query(query)
        .definition(query)
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.NATURAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    return variable.all_value(".*") if multi else variable


def _faults_annotation(scope: str) -> dash_b.AnnotationQuery:
    """Marks the time ranges where a fault action was active on any selected worker."""
    return (
        dash_b.AnnotationQuery()
        .name("Faults")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .expr(f"{gauge('faults_active', scope, ('authority', 'worker', 'kind'))} > 0")
        .title_format("fault: {{kind}}")
        .text_format("{{authority}} / worker {{worker}}")
        .tag_keys("kind")
        .step("15s")
    )


def _dashboard(
    uid: str, title: str, description: str, variables: list[Builder[dash_m.VariableModel]]
) -> dash_b.Dashboard:
    return (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time("now-30m", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .variables(variables)
        .link(
            dash_b.DashboardLink("Narwhal dashboards")
            .type(dash_m.DashboardLinkType.DASHBOARDS)
            .tags(["narwhal"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def overview() -> dash_b.Dashboard:
    """The whole committee at a glance: throughput, latency, peers, failures and faults."""
    s = OVERVIEW_SCOPE
    authority = _query_variable(
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
    dashboard = _dashboard(
        OVERVIEW_UID,
        "Narwhal workers / Overview",
        "Throughput, latency, peer health and injected faults across the selected authorities.",
        [_datasource_variable(), authority],
    ).annotation(_faults_annotation(s))
    dashboard = with_row(dashboard, "Throughput", throughput)
    dashboard = with_row(dashboard, "Latency & quorum", latency)
    return with_row(dashboard, "Peers, failures & faults", peers)


def node() -> dash_b.Dashboard:
    """One authority's workers in detail: batch making, quorum, per-peer links, internals."""
    s = NODE_SCOPE
    authority = _query_variable(
        "authority", "label_values(transactions_received_total, authority)", multi=False
    )
    worker = _query_variable(
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
    dashboard = _dashboard(
        NODE_UID,
        "Narwhal workers / Node",
        "One authority's workers: batch making, quorum, per-peer links and internal queues.",
        [_datasource_variable(), authority, worker],
    ).annotation(_faults_annotation(s))
    dashboard = with_row(dashboard, "Batches", batches)
    dashboard = with_row(dashboard, "Quorum", quorum)
    dashboard = with_row(dashboard, "Peers", peers)
    return with_row(dashboard, "Internals", internals)


# --- output ---------------------------------------------------------------------------


def _to_dict(builder: dash_b.Dashboard) -> dict[str, Any]:
    """Encode with the SDK, number the panels so the output is stable, and drop the SDK's
    default `placement: inControlsMenu` on annotations and links, which would tuck the
    faults toggle and the dashboard links away in Grafana 12's controls menu."""
    model = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    for item in [*model.get("annotations", {}).get("list", []), *model.get("links", [])]:
        item.pop("placement", None)
    next_id = 1
    for panel in model["panels"]:
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return model


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by uid."""
    built = [_to_dict(overview()), _to_dict(node())]
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


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_EXACT_MATCH = re.compile(r'(\w+)="(\$\w+|\$\{\w+\})"')


def runnable(expr: str) -> str:
    """`expr` runnable as plain PromQL: variables replaced per `RUNNABLE_VARS`.

    Exact matchers on a variable (`authority="$authority"`) become `=~`, so that `.*`
    selects every series as "All" would.
    """
    expr = _EXACT_MATCH.sub(r'\1=~"\2"', expr)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in RUNNABLE_VARS:
            raise ValueError(f"no runnable value for ${name} in {expr!r}")
        return RUNNABLE_VARS[name]

    return _VARIABLE.sub(value, expr)


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
