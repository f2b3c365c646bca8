"""`faults_active` and `peer_handshakes` read what happened: the worker's own fault kinds
follow its settings, the driver's kinds (crash, impersonation) come from the driver's
registry under the same labels, and handshake counts come from their source."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics.dashboards import panel_queries
from metrics.exporter import MetricsServer
from metrics.injected_faults import InjectedFaults
from metrics.prometheus_server import PrometheusServer
from metrics.service_discovery import (
    DriverTarget,
    MetricsTarget,
    prepare_config_dir,
    write_targets,
)
from metrics.worker_metrics import (
    DRIVER_FAULT_KINDS,
    WORKER_FAULT_KINDS,
    LiveCollector,
    WorkerMetrics,
)


def _samples(registry, name: str) -> dict[tuple[str, ...], float]:  # type: ignore[no-untyped-def]
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in families
        for s in family.samples
        if s.name == name
    }


def _faults(registry) -> dict[tuple[str, str, str], float]:  # type: ignore[no-untyped-def]
    return {
        (labels["authority"], labels["worker"], labels["kind"]): value
        for key, value in _samples(registry, "faults_active").items()
        for labels in [dict(key)]
    }


def test_worker_exports_only_the_kinds_it_can_see() -> None:
    m = WorkerMetrics("a", 0, quorum_stake_buckets=(1,))
    m.initialize([])
    assert {kind for _, _, kind in _faults(m.registry)} == set(WORKER_FAULT_KINDS)
    assert not set(WORKER_FAULT_KINDS) & set(DRIVER_FAULT_KINDS)
    m.show_faults({"partition", "silent"})
    active = {kind for (_, _, kind), value in _faults(m.registry).items() if value}
    assert active == {"partition", "silent"}
    m.show_faults(())
    assert not any(_faults(m.registry).values())
    with pytest.raises(ValueError, match="crash"):
        m.show_faults({"crash"})


def test_driver_reports_crash_and_impersonation_under_the_worker_labels() -> None:
    injected = InjectedFaults([("a", 0), ("b", 0)])
    assert _faults(injected.registry) == {
        (authority, "0", kind): 0.0 for authority in "ab" for kind in DRIVER_FAULT_KINDS
    }
    injected.set("a", 0, "crash", True)
    with injected.during("b", 0, "impersonation"):
        assert _faults(injected.registry)["b", "0", "impersonation"] == 1
    faults = _faults(injected.registry)
    assert faults["a", "0", "crash"] == 1 and faults["b", "0", "impersonation"] == 0
    injected.set("a", 0, "crash", False)  # restarted
    assert not any(_faults(injected.registry).values())
    with pytest.raises(ValueError, match="worker itself"):
        injected.set("a", 0, "partition", True)


def test_handshakes_come_from_their_source() -> None:
    m = WorkerMetrics("a", 0, quorum_stake_buckets=(1,))
    counts = {"accepted": 0}
    m.add_live(LiveCollector(m.base, dict, dict, lambda: 0, lambda: counts))
    assert _samples(m.registry, "peer_handshakes_total") == {
        (("authority", "a"), ("result", "accepted"), ("worker", "0")): 0.0
    }
    counts.update(accepted=3, bad_signature=1)
    results = {
        dict(k)["result"]: v for k, v in _samples(m.registry, "peer_handshakes_total").items()
    }
    assert results == {"accepted": 3, "bad_signature": 1}


def test_targets_file_holds_workers_and_the_driver(tmp_path: Path) -> None:
    path = write_targets(
        tmp_path / "targets" / "workers.json",
        [
            MetricsTarget("127.0.0.1:2", "b", 0),
            DriverTarget("127.0.0.1:9"),
            MetricsTarget("127.0.0.1:1", "a", 0),
        ],
    )
    groups = json.loads(path.read_text())
    assert [(g["labels"]["instance"], g["targets"]) for g in groups] == [
        ("a-w0", ["127.0.0.1:1"]),
        ("b-w0", ["127.0.0.1:2"]),
        ("driver", ["127.0.0.1:9"]),
    ]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_dashboards_faults_annotation_shows_a_driver_reported_crash(tmp_path: Path) -> None:
    """Scraped through the targets file, the driver's crash series is what the dashboards'
    Faults annotation finds, under the crashed worker's labels."""
    annotations = [e for _, title, e in panel_queries() if title == "annotation: Faults"]
    assert len(annotations) == 2  # one per dashboard
    injected = InjectedFaults([("a", 0)])
    injected.set("a", 0, "crash", True)
    exporter = MetricsServer(injected.registry)
    config, targets = prepare_config_dir(tmp_path)
    write_targets(targets, [DriverTarget(exporter.start())])
    try:
        with PrometheusServer(config, tmp_path / "data") as server:
            deadline = time.monotonic() + 60
            while not server.query(annotations[0]):  # bounded poll: no scrape event to await
                assert time.monotonic() < deadline, server.targets()
                time.sleep(0.2)
            found = [[r["metric"] for r in server.query(expr)] for expr in annotations]
    finally:
        exporter.stop()
    assert found == [[{"authority": "a", "worker": "0", "kind": "crash"}]] * 2
