"""The generated Grafana dashboards: committed JSON in sync, and every query well-formed
against what a real `WorkerMetrics` registry exports (a renamed metric breaks a test,
not a panel nobody looks at until an experiment)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics import dashboards as gen
from metrics.promql import runnable
from metrics.worker_metrics import LiveCollector, WorkerMetrics

GRAFANA_DIR = Path(gen.__file__).parent / "grafana"
EXPECTED_UIDS = {"narwhal-overview", "narwhal-node"}
DS = "${datasource}"

# Words in PromQL that are not metric names.
_KEYWORDS = {
    *("by", "without", "on", "ignoring", "group_left", "group_right", "bool"),
    *("and", "or", "unless", "offset", "le", "inf", "nan"),
}


def _exposition() -> str:
    """A registry like a running worker's, with every metric touched once."""
    m = WorkerMetrics("abcd1234", 0, quorum_stake_buckets=(3, 4))
    m.initialize(["p1"])  # what a worker does at start: every known series at zero
    for reason in ("size", "timeout"):
        m.child(m.created_batch_size, reason=reason).observe(1000)
        m.child(m.created_batch_latency, reason=reason).observe(0.1)
    m.quorum_latency.observe(0.1)
    m.quorum_stake.observe(3)
    m.quorum_batches.inc()
    m.quorum_transactions.inc(10)
    m.quorum_bytes.inc(5120)
    m.child(m.quorum_failures, reason="anti_quorum").inc()
    m.in_flight.set(1)
    m.child(m.acks, peer="p1").inc()
    m.child(m.ack_latency, peer="p1").observe(0.01)
    m.child(m.retries, peer="p1").inc()
    m.child(m.request_failures, peer="p1", reason="transport").inc()
    m.child(m.persisted, origin="own").inc()
    m.child(m.reported, kind="our_batch").inc()
    m.transactions.inc(10)
    m.transaction_bytes.inc(5120)
    m.sample_latency.observe(0.2)
    m.child(m.faults_active, kind="partition").set(1)
    m.add_live(
        LiveCollector(
            m.base,
            rejections=lambda: {"transport": {"oversized": 2}},
            queues=lambda: {"sealed": 1},
            connected_peers=lambda: 3,
            handshakes=lambda: {"accepted": 3},
        )
    )
    return generate_latest(m.registry).decode()


@pytest.fixture(scope="module")
def exported_series() -> set[str]:
    """Sample names as Prometheus stores them (`_total`, `_bucket`, `_sum`, `_count`)."""
    families = list(text_string_to_metric_families(_exposition()))
    untouched = sorted(f.name for f in families if not f.samples)
    assert not untouched, (
        f"touch these in _exposition() so the dashboards can use them: {untouched}"
    )
    return {sample.name for family in families for sample in family.samples}


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return gen.dashboards()


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside `{}` and `by (...)`) or numbers."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        rest = expr[match.end() :].lstrip()
        if not rest.startswith("(") and match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def _variable_metrics(dashboard: dict[str, Any]) -> set[str]:
    queries = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return {m for q in queries for m in re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", q)}


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, peer) (rate(a_bucket{authority=~"x+y", le="1"}'
        "[$__rate_interval]))) / sum(rate(b_total[1m])) > 0"
    )
    assert _metric_names(expr) == {"a_bucket", "b_total"}


def test_committed_json_equals_generator_output(generated: dict[str, dict[str, Any]]) -> None:
    committed = {p.stem for p in gen.DASHBOARD_DIR.glob("*.json")}
    assert committed == set(generated), "run: python -m metrics.dashboards"
    for uid, dashboard in generated.items():
        text = (gen.DASHBOARD_DIR / f"{uid}.json").read_text()
        assert text == gen.render(dashboard), f"{uid}.json is stale: python -m metrics.dashboards"


def test_write_produces_the_committed_files(tmp_path: Path) -> None:
    for path in gen.write(tmp_path):
        assert path.read_text() == (gen.DASHBOARD_DIR / path.name).read_text()


def test_uids_are_stable_and_unique() -> None:
    files = sorted(gen.DASHBOARD_DIR.glob("*.json"))
    uids = [json.loads(p.read_text())["uid"] for p in files]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    assert [p.stem for p in files] == sorted(uids)


def test_panel_ids_unique_and_every_panel_has_targets(
    generated: dict[str, dict[str, Any]],
) -> None:
    for uid, dashboard in generated.items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), uid
        panels = list(gen.iter_panels(dashboard))
        assert panels, uid
        for panel in panels:
            assert panel.get("targets"), f"{uid} / {panel['title']} has no target"
            assert all(t["expr"].strip() for t in panel["targets"])
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids))


def test_everything_queries_the_datasource_variable(
    generated: dict[str, dict[str, Any]],
) -> None:
    for uid, dashboard in generated.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == {"type": "prometheus", "uid": DS}, uid
        for annotation in dashboard["annotations"]["list"]:
            assert annotation["datasource"]["uid"] == DS, uid
        for panel in gen.iter_panels(dashboard):
            assert panel["datasource"]["uid"] == DS, (uid, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": DS}
                assert "datasource" not in target["expr"]


def test_template_variables(generated: dict[str, dict[str, Any]]) -> None:
    overview = {v["name"]: v for v in generated["narwhal-overview"]["templating"]["list"]}
    assert list(overview) == ["datasource", "authority"]
    authority = overview["authority"]
    assert authority["query"] == "label_values(transactions_received_total, authority)"
    assert authority["multi"] and authority["includeAll"] and authority["allValue"] == ".*"

    node = {v["name"]: v for v in generated["narwhal-node"]["templating"]["list"]}
    assert list(node) == ["datasource", "authority", "worker"]
    assert not node["authority"]["multi"] and not node["authority"]["includeAll"]
    assert "$authority" in node["worker"]["query"]


def test_every_selector_is_scoped_and_uses_rate_interval() -> None:
    """Each panel follows its dashboard's variables; ranges are Grafana's rate interval."""
    scopes = {"narwhal-overview": gen.OVERVIEW_SCOPE, "narwhal-node": gen.AUTHORITY_SCOPE}
    for uid, title, expr in [*gen.queries(), *gen.annotation_queries()]:
        selectors = re.findall(r"\{([^}]*)\}", expr)
        assert selectors, (uid, title, expr)
        assert all(s == scopes[uid] for s in selectors), (uid, title, expr)
        assert set(re.findall(r"\[([^\]]*)\]", expr)) == {"$__rate_interval"} or (
            "[" not in expr
        ), (uid, title, expr)


def test_every_metric_exists_in_a_real_registry(
    generated: dict[str, dict[str, Any]], exported_series: set[str]
) -> None:
    used: dict[str, set[str]] = {}
    for uid, title, expr in [*gen.queries(), *gen.annotation_queries()]:
        names = _metric_names(expr)
        assert names, (uid, title, expr)
        for name in names:
            used.setdefault(name, set()).add(f"{uid} / {title}")
    for uid, dashboard in generated.items():
        for name in _variable_metrics(dashboard):
            used.setdefault(name, set()).add(f"{uid} / variables")
    missing = {name: sorted(where) for name, where in used.items() if name not in exported_series}
    assert not missing, f"not exported by WorkerMetrics: {missing}"


def test_panel_queries_are_runnable(generated: dict[str, dict[str, Any]]) -> None:
    rows = gen.panel_queries()
    targets = sum(len(p["targets"]) for d in generated.values() for p in gen.iter_panels(d))
    annotations = sum(len(d["annotations"]["list"]) for d in generated.values())
    assert len(rows) == targets + annotations
    for uid, title, expr in rows:
        assert uid in EXPECTED_UIDS and title
        assert "$" not in expr, (uid, title, expr)
        assert '="' not in expr.replace('=~"', ""), "exact matchers on variables become =~"
    assert any("[1m]" in expr for _, _, expr in rows)
    assert runnable('x{a="$authority", w=~"$worker"}[$__rate_interval]') == (
        'x{a=~".*", w=~".*"}[1m]'
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_panel_queries_parse_as_promql(tmp_path: Path) -> None:
    rules = [{"record": f"q:{i}", "expr": e} for i, (_, _, e) in enumerate(gen.panel_queries())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_files() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://localhost:9090"
    assert source["isDefault"] is True
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "narwhal.yml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
