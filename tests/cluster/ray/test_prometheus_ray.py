"""Workers on Ray under a real Prometheus: every worker's exposition passes promtool, and a
restarted one continues its series (same labels; the counter reset is seen by rate)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
import ray

from cluster.backends.ray import write_ray_targets
from cluster.ray.committee import RayCommittee
from cluster.ray.connect import connect
from cluster.ray.load import RayLoad
from metrics.prometheus_server import PrometheusServer
from metrics.service_discovery import prepare_config_dir
from worker.config import Parameters
from worker.keys import short_name

pytestmark = pytest.mark.slow
PARAMS = Parameters(
    batch_size=20_000, max_batch_delay=20, retry_max_delay=500, sync_writes=False, transport="tcp"
)


def _wait(predicate, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Bounded poll: Prometheus offers no event to await."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    root = tmp_path_factory.mktemp("prom-ray")
    config, targets = prepare_config_dir(root)
    assert connect(None, num_cpus=2)  # as `run` does: held to loopback
    committee = RayCommittee(4, 1, PARAMS, store_root=str(root / "stores"))
    try:
        with PrometheusServer(config, root / "data") as server:
            committee.deploy(timeout=120)
            write_ray_targets(committee, targets)
            yield committee, server, targets
    finally:
        committee.stop(remove_stores=True)
        ray.shutdown()


def _up(server: PrometheusServer, count: int) -> bool:
    active = server.targets()
    return len(active) == count and all(t["health"] == "up" for t in active)


def test_every_actor_exposition_passes_promtool(setup) -> None:
    committee, _, _ = setup
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-test-deps.sh"
    for slot in committee.workers:
        with urllib.request.urlopen(f"http://{slot.info['metrics']}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "quorum_batches_total" in text
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr


def _scraped(server: PrometheusServer, address: str) -> bool:
    """Prometheus has scraped the endpoint at `address` successfully at least once."""
    return any(t["health"] == "up" and f"//{address}/" in t["scrapeUrl"] for t in server.targets())


def _value(server: PrometheusServer, expr: str) -> float:
    (sample,) = server.query(expr)
    return float(sample["value"][1])


def test_restarted_actor_keeps_its_series(setup) -> None:
    """The reset is made observable by construction, not by timing: the victim's counter
    is scraped at >= 1 before the kill, and the restarted process is scraped before any
    load reaches it, so Prometheus holds a sample of 0 after one of >= 1 (no race with
    the new process's counter growing past the old value before its first scrape)."""
    committee, server, targets = setup
    _wait(lambda: _up(server, 4), "4 healthy targets")
    victim = committee.workers[0]
    instance = f"{short_name(victim.authority)}-w{victim.worker_id}"
    selector = f'quorum_batches_total{{instance="{instance}"}}'
    load = RayLoad(committee)
    try:
        load.run(rate=2_000, tx_size=256, duration=2)
        assert committee.drain(30)
        load.stop()  # no client sends anything until the restarted process was scraped

        def scraped_at_least(n: float) -> bool:
            result = server.query(selector)
            return bool(result) and float(result[0]["value"][1]) >= n

        _wait(lambda: scraped_at_least(1), "the victim's first batches in Prometheus")
        before = _value(server, selector)
        old_address = victim.info["metrics"]
        committee.crash_authority(victim.authority)
        committee.restart_authority(victim.authority)
        write_ray_targets(committee, targets)
        new_address = victim.info["metrics"]
        assert new_address != old_address  # a new process, a new port
        _wait(lambda: _scraped(server, new_address), "a scrape of the restarted process")
        assert _value(server, selector) == 0  # the new process, before any load
        _wait(lambda: bool(server.query(f"resets({selector}[5m]) >= 1")), "the reset")
        load = RayLoad(committee)
        load.run(rate=2_000, tx_size=256, duration=2)
        assert committee.drain(30)
        _wait(lambda: scraped_at_least(1), "the restarted victim's batches in Prometheus")
    finally:
        load.stop()
    # one series, same labels, before and after the restart
    series = server._get("/api/v1/series", **{"match[]": selector})
    assert len(series) == 1
    increase = _value(server, f"increase({selector}[5m])")
    assert increase > before  # rate/increase see through the counter reset
