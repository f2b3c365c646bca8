"""A real Prometheus scrapes a loaded committee through the generated SD file; every
dashboard query returns data, and its latency quantiles agree with the driver's."""

from __future__ import annotations

import bisect
import time

import pytest

from cluster.backends.local import LocalBackend
from cluster.experiment import ExperimentConfig, run_experiment
from metrics.dashboards import panel_queries
from metrics.prometheus_server import PrometheusServer
from metrics.service_discovery import prepare_config_dir
from metrics.worker_metrics import LATENCY_BUCKETS
from worker.config import Parameters


def _wait_for_targets(server: PrometheusServer, count: int, timeout: float = 60) -> None:
    """Until Prometheus has scraped `count` healthy targets (bounded poll: no event API)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        targets = server.targets()
        if len(targets) == count and all(t["health"] == "up" for t in targets):
            return
        time.sleep(0.2)
    raise AssertionError(f"targets not up: {server.targets()}")


def _bucket_width(value: float) -> float:
    bounds = (0.0, *LATENCY_BUCKETS)
    i = bisect.bisect_left(bounds, value)
    return bounds[min(i, len(bounds) - 1)] - bounds[max(i - 1, 0)]


@pytest.fixture(scope="module")
def scraped_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("prom")
    config, targets = prepare_config_dir(root)
    with PrometheusServer(config, root / "data") as server:
        cfg = ExperimentConfig(
            authorities=4,
            rate=4_000,
            tx_size=256,
            duration=8,
            params=Parameters(batch_size=50_000, max_batch_delay=50),
            targets_file=targets,
            linger=4.0,
            on_ready=lambda: _wait_for_targets(server, 4),
        )
        summary = run_experiment(cfg, LocalBackend()).summary()
        # Query inside the linger, after the last scrape of the drained committee and
        # before its workers stopped (afterwards their gauges are stale).
        yield server, summary, summary["drained_at"] + 3.0


def test_every_dashboard_query_returns_data(scraped_run) -> None:
    server, _, end = scraped_run
    queries = panel_queries()
    panels = [q for q in queries if not q[1].startswith("annotation:")]
    assert len(panels) >= 20
    empty = [(uid, title, expr) for uid, title, expr in panels if not server.query(expr, end)]
    assert not empty, f"queries without data: {empty}"
    # Fault annotations are empty in a run without faults, but must evaluate.
    for _, _, expr in set(queries) - set(panels):
        assert server.query(expr, end) == []


def test_quantiles_agree_with_the_driver(scraped_run) -> None:
    server, summary, end = scraped_run
    assert summary["latency_samples"] > 50
    for q, key in ((0.5, "latency_p50_s"), (0.99, "latency_p99_s")):
        expr = (
            f"histogram_quantile({q}, sum(increase(client_sample_latency_seconds_bucket[5m]))"
            " by (le))"
        )
        (result,) = server.query(expr, end)
        prom = float(result["value"][1])
        driver = summary[key]
        assert abs(prom - driver) <= _bucket_width(driver), (q, prom, driver)


def test_counters_agree_with_the_driver(scraped_run) -> None:
    server, summary, end = scraped_run
    # the workers are gone by now: their last samples are the final counts
    (result,) = server.query("sum(max_over_time(quorum_transactions_total[5m]))", end)
    assert float(result["value"][1]) == summary["transactions_quorum"]
    (result,) = server.query("sum(max_over_time(quorum_batches_total[5m]))", end)
    assert float(result["value"][1]) == summary["batches_quorum"]


def test_shipped_config_passes_promtool(tmp_path) -> None:
    import shutil
    import subprocess

    from metrics.service_discovery import SHIPPED_CONFIG

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-test-deps.sh"
    config, _ = prepare_config_dir(tmp_path)
    for path in (SHIPPED_CONFIG, config):
        check = subprocess.run(
            [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "SUCCESS" in check.stdout + check.stderr
