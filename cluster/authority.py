"""One authority (or its share on one machine) hosted on one trio loop: its digest
collector and its workers, in one process.

Used by the local backend's authority process (driven over a pipe), by the Ray backend's
host actor (cluster/ray/host_actor.py) and by the `narwhal-testbed authority` command
(run until interrupted). Worker w's store is `<store>/worker-<w>`, so a restarted
authority finds its stores again.

The collector stands for the primary, which a worker crash leaves alone; here it shares
the workers' process, so a crash takes it too. `freeze` stops it first (no report is
confirmed after that) and returns what it received, with the workers' quorum records
(in memory only): the driver keeps both, and the workers re-send whatever report was
not confirmed when they come back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from primary.digest_collector import DigestCollector
from worker.config import Committee, Parameters
from worker.core.faults import FaultSettings
from worker.keys import KeyPair, short_name
from worker.worker import Worker


def where(host: str) -> dict[str, Any]:
    """Where a worker runs: the fields a Ray actor reports, Ray's left empty."""
    return {
        "ray_node_id": None,
        "ray_node_ip": None,
        "pid": os.getpid(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "host": host,
    }


class AuthorityHost:
    def __init__(
        self,
        committee: Committee,
        params: Parameters,
        keypair: KeyPair,
        store: Path,
        worker_ids: Iterable[int] | None = None,
        collector: bool = True,
    ) -> None:
        """Build in the trio loop that will run it: the workers read trio's clock."""
        self.committee, self.params, self.keypair, self.store = committee, params, keypair, store
        self.name = keypair.name
        self.host, port = committee.authorities[self.name].primary.hostport
        self.collector = (
            DigestCollector(self.host, port, authority=self.name) if collector else None
        )
        self._collector_scope = trio.CancelScope()
        self._collector_done = trio.Event()
        ids = sorted(committee.authorities[self.name].workers if worker_ids is None else worker_ids)
        self.workers = [
            Worker(
                committee,
                self.name,
                wid,
                params,
                store / f"worker-{wid}",
                metrics_address=(self._bind_host(wid), 0),
                keypair=keypair,
            )
            for wid in ids
        ]

    def _bind_host(self, worker_id: int) -> str:
        return self.committee.worker(self.name, worker_id).transactions_hostport[0]

    async def start(self, nursery: trio.Nursery) -> list[dict[str, Any]]:
        """Start the collector, then the workers; returns each worker's info and location."""
        if self.collector is not None:
            await nursery.start(self._serve_collector, self.collector)
        infos = [await nursery.start(w.run) for w in self.workers]
        return [
            {**info, **where(self._bind_host(w.worker_id))}
            for w, info in zip(self.workers, infos, strict=True)
        ]

    async def _serve_collector(
        self, collector: DigestCollector, *, task_status: trio.TaskStatus[str]
    ) -> None:
        try:
            with self._collector_scope:
                await collector.serve(task_status=task_status)
        finally:
            self._collector_done.set()

    async def freeze(self) -> dict[str, Any]:
        """Stop the collector (listener and links closed: nothing is confirmed after this)
        and return its digests and the workers' quorum records: what the driver keeps of
        this process before a crash kills it (cluster/backends/crashed.py)."""
        digests: dict[str, Any] = {}
        if self.collector is not None:
            self._collector_scope.cancel()
            await self._collector_done.wait()
            digests = self.collector.digests.to_json()
        return {
            "digests": digests,
            "records": {w.worker_id: w.records_json() for w in self.workers},
        }

    # -- discovery ------------------------------------------------------------------------
    def learn(self, peers: dict[int, dict[str, str]]) -> None:
        """Peers' listen addresses (worker id -> authority -> address); TCP has them."""
        for worker in self.workers:
            learnt = peers.get(worker.worker_id, {})
            worker.add_peer_addrs({a: addr for a, addr in learnt.items() if a != self.name})

    async def discover(
        self, peers: dict[int, dict[str, str]], expected: list[str], timeout: float
    ) -> dict[int, dict[str, str]]:
        """Learn `peers`, then wait until linked to the `expected` authorities; returns
        each worker's peer ids (empty over TCP)."""
        found = {}
        wanted = set(expected) - {self.name}
        with trio.fail_after(timeout):
            self.learn(peers)
            for worker in self.workers:
                found[worker.worker_id] = dict(await worker.wait_discovery(wanted))
        return found

    async def linked(self, expected: list[str], timeout: float) -> list[str]:
        """Wait up to `timeout` s for every worker's link to each `expected` authority;
        returns those some worker is still not linked to (a restart's rediscovery asks
        again with whoever is still up, so a peer that crashed meanwhile is no failure)."""
        missing: set[str] = set()

        async def one(worker: Worker, peer: str) -> None:
            with trio.move_on_after(timeout) as scope:
                await worker.wait_discovery({peer})
            if scope.cancelled_caught:
                missing.add(peer)

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                for peer in set(expected) - {self.name}:
                    nursery.start_soon(one, worker, peer)
        return sorted(missing)

    # -- load, faults, drain --------------------------------------------------------------
    async def progress(self) -> dict[str, int]:
        figures = [w.progress() for w in self.workers]
        return {k: sum(f[k] for f in figures) for k in ("transactions_received", "batches_quorum")}

    async def set_faults(self, settings_json: str) -> None:
        settings = FaultSettings.model_validate_json(settings_json)
        for worker in self.workers:
            worker.set_faults(settings)

    async def impersonate(
        self, victim: str, peers: dict[int, dict[str, str]]
    ) -> list[dict[str, Any]]:
        """An extra host of this (Byzantine) authority per worker id claims to be `victim`."""
        results = []
        for worker in self.workers:
            result = await worker.impersonate(victim, peers.get(worker.worker_id, {}))
            results.append({"by": f"{short_name(self.name)}/w{worker.worker_id}", **result})
        return results

    async def drain(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            for worker in self.workers:
                await worker.wait_idle()
        return all(w.idle() for w in self.workers)

    # -- results --------------------------------------------------------------------------
    async def flush_reports(self, timeout: float) -> int:
        """Wait until every digest stored here was sent to the primary; returns how many."""
        sent = 0
        with trio.move_on_after(timeout):
            for worker in self.workers:
                sent += await worker.flush_reports(timeout)
        return sent

    async def wait_reports(self, expected: int, timeout: float) -> int:
        """Return once the collector has `expected` reports (or after `timeout`)."""
        collector = self.collector
        if collector is None:
            return 0
        with trio.move_on_after(timeout):
            await collector.wait_for(lambda: collector.reports >= expected)
        return collector.reports

    def results(self) -> dict[str, Any]:
        """The workers' stats and quorum records, and the collector's digests."""
        collector = self.collector
        return {
            "authority": self.name,
            "workers": [
                {**w.stats(), "records": w.records_json(), **where(self._bind_host(w.worker_id))}
                for w in self.workers
            ],
            "collector": collector.digests.to_json() if collector else {},
            "reports": collector.reports if collector else 0,
            "rejections": dict(collector.rejections) if collector else {},
        }

    async def collect(self, timeout: float) -> dict[str, Any]:
        """Stats and records once every digest reported reached the collector (every
        worker of the authority is here: the local backend)."""
        sent = await self.flush_reports(timeout)
        await self.wait_reports(sent, timeout)
        return self.results()

    async def evidence(self) -> list[dict[str, Any]]:
        return [w.evidence() for w in self.workers]

    def stored_batches(self, worker_id: int) -> int:
        return next(w for w in self.workers if w.worker_id == worker_id).stored_count()

    @property
    def stores_closed(self) -> bool:
        return all(w.store_closed for w in self.workers)
