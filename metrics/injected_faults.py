"""Faults the driver injects that no worker can report itself.

A crashed worker exports nothing, and an impersonation is a host outside every
worker's `FaultSettings`, so `faults_active{kind="crash"|"impersonation"}` comes from
the driver: it serves one `InjectedFaults` registry as a scrape target of its own
(`service_discovery.DriverTarget`). Its series carry the workers' `authority` and
`worker` labels, so the dashboards' `sum by (authority, worker, kind) (faults_active)`
shows them beside the faults the workers report, with no query of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Gauge

from metrics.worker_metrics import BASE_LABELS, DRIVER_FAULT_KINDS


class InjectedFaults:
    """`faults_active` for the driver-side kinds, one series per worker and kind."""

    def __init__(self, workers: Iterable[tuple[str, int]]) -> None:
        """`workers`: (authority short name, worker id) of every worker, exported at 0."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._gauge = Gauge(
            "faults_active",
            "Fault actions active on this worker, by kind (crash, impersonation: the driver).",
            [*BASE_LABELS, "kind"],
            registry=self.registry,
        )
        for authority, worker_id in workers:
            for kind in DRIVER_FAULT_KINDS:
                self.set(authority, worker_id, kind, False)

    def set(self, authority: str, worker_id: int, kind: str, active: bool) -> None:
        """Mark `kind` in force (or over) on one worker: a crash until its restart."""
        if kind not in DRIVER_FAULT_KINDS:
            raise ValueError(f"{kind!r} is reported by the worker itself, not the driver")
        self._gauge.labels(authority=authority, worker=str(worker_id), kind=kind).set(active)

    @contextmanager
    def during(self, authority: str, worker_id: int, kind: str) -> Iterator[None]:
        """`kind` in force while the block runs (an impersonation attempt, say)."""
        self.set(authority, worker_id, kind, True)
        try:
            yield
        finally:
            self.set(authority, worker_id, kind, False)
