"""Grafana panel, variable and dashboard builders over the Foundation SDK.

A few helpers (`timeseries`, `quantiles`, `rate_and_bytes`, `size_heatmap`) so every
panel looks alike: the `${datasource}` variable on every panel, target, variable and
annotation, lines from zero, a sorted multi tooltip and the legend below. `to_dict`
encodes a built dashboard into the stable JSON that is committed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from metrics.promql import gauge, increase, quantile, rate

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

TAGS = ["narwhal", "narwhal-testbed"]

#: Every panel, target, variable and annotation queries the data source picked here.
DATASOURCE = common_m.DataSourceRef(type_val="prometheus", uid="${datasource}")


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


def datasource_variable() -> dash_b.DatasourceVariable:
    return dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_variable(name: str, query: str, *, multi: bool) -> dash_b.QueryVariable:
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


def faults_annotation(scope: str) -> dash_b.AnnotationQuery:
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


def base_dashboard(
    uid: str, title: str, description: str, variables: list[Builder[dash_m.VariableModel]]
) -> dash_b.Dashboard:
    """What every dashboard shares: tags, time range, refresh, a shared crosshair and a
    dropdown of links to the other Narwhal dashboards (carrying time and variables)."""
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


def to_dict(builder: dash_b.Dashboard) -> dict[str, Any]:
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
