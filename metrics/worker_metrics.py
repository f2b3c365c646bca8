"""The worker's Prometheus metrics, on a registry of its own (never the global one).

Names follow Prometheus conventions (base units; `_seconds`, `_bytes`, `_total`) and
reuse the later Narwhal versions' names where they fit (`created_batch_size`,
`created_batch_latency`, `parallel_worker_batches`, `batch_persisted_total`).
Every series carries `authority` (short key) and `worker`; some add `peer`, `reason`
or `origin`: nothing of higher cardinality. Hot-path updates are per batch, per request
or per read of a client connection, never per transaction; the per-request and per-read
ones are lock-free tallies (metrics/tally.py) exported under the same names. Counters
that live elsewhere (rejections, queue depths, connected peers) are read at scrape time
by `LiveCollector`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from metrics.tally import Tallies, TallyCounter, TallyGauge, TallyHistogram

# `_created` series double the exposition and no dashboard uses them.
disable_created_metrics()

#: Quorum latency under faults needs the long tail (the client default stops at 10 s).
LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75),
    *(1.0, 1.5, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0),
)
SIZE_BUCKETS = (1e3, 5e3, 1e4, 5e4, 1e5, 2e5, 3e5, 4e5, 5e5, 6e5, 8e5, 1e6, 2e6, 4e6, 8e6)
BASE_LABELS = ("authority", "worker")
_M = TypeVar("_M", Counter, Gauge, Histogram)

#: Label values exported at zero from the start, so a rate or a panel has a series to
#: show before the first event (and "nothing happened" reads as 0, not as "no data").
SEAL_REASONS = ("size", "timeout")
QUORUM_FAILURE_REASONS = ("anti_quorum", "timeout")
REQUEST_FAILURE_REASONS = ("transport", "rejected")
PERSIST_ORIGINS = ("own", "peer")
REPORT_KINDS = ("our_batch", "others_batch")
#: Fault kinds a worker reports itself: what its `FaultSettings` put in force.
WORKER_FAULT_KINDS = (
    *("partition", "delay", "loss", "bandwidth"),
    *("silent", "slow_ack", "forged_ack", "equivocation", "corrupt", "flooding", "replay"),
)
#: Fault kinds only the driver sees (a crashed worker exports nothing; an impersonation
#: is a host outside any worker's settings): `metrics.injected_faults` exports them.
DRIVER_FAULT_KINDS = ("crash", "impersonation")
#: Old name, still read by the worker's `set_faults` loop; `show_faults` replaces both.
FAULT_KINDS = WORKER_FAULT_KINDS
#: Handshake results exported at zero (refusal reasons appear as they are counted).
HANDSHAKE_RESULTS = ("accepted",)
KNOWN_REJECTIONS = {
    "transport": (
        *("oversized", "malformed_frame", "unknown_request_id", "unknown_peer"),
        *("bad_hello", "respond_failed"),
    ),
    "processor": (
        *("oversized", "malformed", "bad_version", "unknown_tag", "bad_field"),
        "unexpected_message",
    ),
    "intake": ("oversized", "empty_transaction"),
}


class WorkerMetrics:
    """Every metric one worker exports, pre-labelled with its authority and worker id."""

    def __init__(self, authority: str, worker_id: int, quorum_stake_buckets: Iterable[float]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.base = {"authority": authority, "worker": str(worker_id)}
        self._children: dict[tuple[object, ...], Any] = {}
        self._tallies = Tallies()
        self.registry.register(self._tallies)
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        # Updated per request (or per read): lock-free tallies (metrics/tally.py).
        fast_counter, fast_histogram = self._tally_counter, self._tally_histogram

        self.created_batch_size = histogram(
            "created_batch_size_bytes", "Size of sealed batches.", SIZE_BUCKETS, "reason"
        )
        self.created_batch_latency = histogram(
            "created_batch_latency_seconds",
            "From a batch's first transaction to its seal.",
            LATENCY_BUCKETS,
            "reason",
        )
        self.quorum_latency = histogram(
            "batch_quorum_latency_seconds",
            "From seal to 2f+1 stake of acks (own batches).",
            LATENCY_BUCKETS,
        )
        self.quorum_stake = histogram(
            "batch_quorum_stake",
            "Stake accumulated when a batch reached quorum.",
            tuple(quorum_stake_buckets),
        )
        self.quorum_batches = counter("quorum_batches", "Own batches that reached quorum.")
        self.quorum_transactions = counter(
            "quorum_transactions", "Transactions in own batches that reached quorum."
        )
        self.quorum_bytes = counter(
            "quorum_transaction_bytes",
            "Transaction bytes in own batches that reached quorum.",
        )
        self.quorum_failures = counter(
            "quorum_failures", "Own batches that failed: anti_quorum or timeout.", "reason"
        )
        self.in_flight = self._tally_gauge(
            "parallel_worker_batches", "Own batches awaiting quorum."
        )
        self.acks = fast_counter("batch_acks", "Acks received, by peer.", "peer")
        self.ack_latency = fast_histogram(
            "batch_ack_latency_seconds",
            "From sending a batch to a peer's ack.",
            LATENCY_BUCKETS,
            "peer",
        )
        self.retries = fast_counter(
            "batch_send_retries", "Batch sends re-sent to a peer (failure, timeout).", "peer"
        )
        self.request_failures = fast_counter(
            "batch_request_failures",
            "Batch sends that failed, by peer and reason.",
            "peer",
            "reason",
        )
        self.persisted = fast_counter(
            "batch_persisted", "Batches written to the store, by origin (own / peer).", "origin"
        )
        self.reported = fast_counter(
            "primary_reports", "Digests reported to the primary: our_batch / others_batch.", "kind"
        )
        self.transactions = fast_counter("transactions_received", "Client transactions received.")
        self.transaction_bytes = fast_counter(
            "transactions_received_bytes", "Client transaction bytes received."
        )
        self.sample_latency = histogram(
            "client_sample_latency_seconds",
            "From a sample transaction's send (stamped by the load client) to quorum.",
            LATENCY_BUCKETS,
        )
        self.faults_active = gauge(
            "faults_active", "Fault actions active on this worker, by kind.", "kind"
        )

    # -- construction: every metric on this registry with the base labels. One without
    # `extra` labels comes back as this worker's series; one with them as the family,
    # whose series `child` looks up.
    def _counter(self, name: str, doc: str, *extra: str) -> Counter:
        return self._own(Counter(name, doc, [*BASE_LABELS, *extra], registry=self.registry), extra)

    def _gauge(self, name: str, doc: str, *extra: str) -> Gauge:
        return self._own(Gauge(name, doc, [*BASE_LABELS, *extra], registry=self.registry), extra)

    def _histogram(self, name: str, doc: str, buckets: Iterable[float], *extra: str) -> Histogram:
        labels = [*BASE_LABELS, *extra]
        family = Histogram(name, doc, labels, buckets=tuple(buckets), registry=self.registry)
        return self._own(family, extra)

    def _own(self, metric: _M, extra: tuple[str, ...]) -> _M:
        return metric if extra else metric.labels(**self.base)

    def _tally_counter(self, name: str, doc: str, *extra: str) -> Any:
        family = self._tallies.add(TallyCounter(name, doc, [*BASE_LABELS, *extra]))
        return family if extra else family.labels(**self.base)

    def _tally_gauge(self, name: str, doc: str, *extra: str) -> Any:
        family = self._tallies.add(TallyGauge(name, doc, [*BASE_LABELS, *extra]))
        return family if extra else family.labels(**self.base)

    def _tally_histogram(self, name: str, doc: str, buckets: Iterable[float], *extra: str) -> Any:
        family = self._tallies.add(TallyHistogram(name, doc, [*BASE_LABELS, *extra], buckets))
        return family if extra else family.labels(**self.base)

    def initialize(self, peers: Iterable[str]) -> None:
        """Create every known series at zero (peers by their short names)."""
        for reason in SEAL_REASONS:
            self.child(self.created_batch_size, reason=reason)
            self.child(self.created_batch_latency, reason=reason)
        for reason in QUORUM_FAILURE_REASONS:
            self.child(self.quorum_failures, reason=reason)
        for origin in PERSIST_ORIGINS:
            self.child(self.persisted, origin=origin)
        for kind in REPORT_KINDS:
            self.child(self.reported, kind=kind)
        self.show_faults(())
        for peer in peers:
            self.child(self.acks, peer=peer)
            self.child(self.ack_latency, peer=peer)
            self.child(self.retries, peer=peer)
            for reason in REQUEST_FAILURE_REASONS:
                self.child(self.request_failures, peer=peer, reason=reason)

    def child(self, metric: _M, **extra: str) -> _M:
        """The series of `metric` for this worker and `extra` labels (cached lookups)."""
        key = (id(metric), *extra.values())
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(**self.base, **extra)
        return found

    def show_faults(self, active: Collection[str]) -> None:
        """Set `faults_active` to 1 for the kinds in `active` and 0 for the other kinds a
        worker reports (call it whenever the worker's `FaultSettings` change)."""
        unknown = set(active) - set(WORKER_FAULT_KINDS)
        if unknown:
            raise ValueError(f"not a worker fault kind: {sorted(unknown)}")
        for kind in WORKER_FAULT_KINDS:
            self.child(self.faults_active, kind=kind).set(kind in active)

    def add_live(self, live: LiveCollector) -> None:
        self.registry.register(live)


class LiveCollector(Collector):
    """Read-at-scrape-time figures owned by other components (no hot-path cost)."""

    def __init__(
        self,
        base: Mapping[str, str],
        rejections: Callable[[], Mapping[str, Mapping[str, int]]],
        queues: Callable[[], Mapping[str, int]],
        connected_peers: Callable[[], int],
        handshakes: Callable[[], Mapping[str, int]],
    ) -> None:
        """`handshakes`: the transport's count of peer handshakes by result, "accepted"
        or the refusal reason (required: a missing source would read as a flat 0)."""
        self._base = dict(base)
        self._handshakes = handshakes
        self._rejections = rejections
        self._queues = queues
        self._connected = connected_peers

    def describe(self) -> list:  # type: ignore[type-arg]
        return []

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        names, values = list(self._base), list(self._base.values())
        rejected = CounterMetricFamily(
            "messages_rejected",
            "Refused inbound messages by source and reason.",
            labels=[*names, "source", "reason"],
        )
        counts = {(src, r): 0 for src, reasons in KNOWN_REJECTIONS.items() for r in reasons}
        for source, reasons in self._rejections().items():
            for reason, count in dict(reasons).items():
                counts[source, reason] = count
        for (source, reason), count in sorted(counts.items()):
            rejected.add_metric([*values, source, reason], count)
        yield rejected
        queues = GaugeMetricFamily(
            "queue_depth", "Entries waiting in internal queues.", labels=[*names, "queue"]
        )
        for queue, depth in self._queues().items():
            queues.add_metric([*values, queue], depth)
        yield queues
        connected = GaugeMetricFamily("connected_peers", "Peers with a live link.", labels=names)
        connected.add_metric(values, self._connected())
        yield connected
        handshakes = CounterMetricFamily(
            "peer_handshakes",
            "Peer handshakes by result (accepted or a rejection reason).",
            labels=[*names, "result"],
        )
        results = {**dict.fromkeys(HANDSHAKE_RESULTS, 0), **dict(self._handshakes())}
        for result, count in results.items():
            handshakes.add_metric([*values, result], count)
        yield handshakes
