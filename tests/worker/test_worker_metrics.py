"""A worker's own registry, served over HTTP: figures agree with the worker, promtool accepts it."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.worker.harness import cluster, send_transactions, transactions
from worker.keys import short_name


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    """Sum of the series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_metrics_agree_with_the_worker(tmp_path: Path) -> None:
    async with cluster(tmp_path, start=0, memory=False) as c:
        auths = [await c.start(i, metrics=(i == 0)) for i in range(4)]
        a = auths[0]
        worker = a.worker
        assert worker is not None
        address = worker.info()["metrics"]
        payload = transactions(600, 100)
        await send_transactions(worker.addresses.transactions, payload)
        await worker.wait_for(lambda: worker.batch_maker.transactions == 600 and worker.idle())
        text = await trio.to_thread.run_sync(_scrape, address)

    samples = _samples(text)
    me = {"authority": short_name(a.name), "worker": "0"}
    batches = len(worker.records)
    assert _value(samples, "transactions_received_total", **me) == 600
    assert _value(samples, "transactions_received_bytes_total", **me) == len(payload) - 600 * 4
    assert _value(samples, "quorum_batches_total", **me) == batches
    assert _value(samples, "quorum_transactions_total", **me) == 600
    assert _value(samples, "batch_quorum_latency_seconds_count", **me) == batches
    assert _value(samples, "created_batch_size_bytes_count", **me) == batches
    assert _value(samples, "batch_persisted_total", origin="own", **me) == batches
    assert _value(samples, "primary_reports_total", kind="our_batch", **me) == batches
    assert _value(samples, "parallel_worker_batches", **me) == 0
    assert _value(samples, "batch_acks_total", **me) >= 2 * batches
    for peer in [x.name for x in auths[1:]]:
        assert ("batch_acks_total", frozenset({**me, "peer": short_name(peer)}.items())) in samples
    # quorum stake buckets start at the threshold: every batch is in the +Inf and 3 buckets
    assert _value(samples, "batch_quorum_stake_bucket", le="3.0", **me) <= batches
    assert _value(samples, "batch_quorum_stake_bucket", le="4.0", **me) == batches
    # 1 in 10 transactions is a sample, but the test's are unstamped: no sample latency
    assert _value(samples, "client_sample_latency_seconds_count", **me) == 0
    assert _value(samples, "connected_peers", **me) == 3
    assert ("queue_depth", frozenset({**me, "queue": "sealed"}.items())) in samples

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-test-deps.sh"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
