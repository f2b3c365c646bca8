"""One authority hosted on one trio loop: its digest collector and its workers.

Used by the local backend's authority process (driven over a pipe) and by the
`narwhal-testbed authority` command (run until interrupted). Worker w's store is
`<store>/worker-<w>`, so a restarted authority finds its stores again.
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
        ids = sorted(committee.authorities[self.name].workers if worker_ids is None else worker_ids)
        self.workers = [
            Worker(
                committee,
                self.name,
                wid,
                params,
                store / f"worker-{wid}",
                metrics_address=(committee.worker(self.name, wid).transactions_hostport[0], 0),
                keypair=keypair,
            )
            for wid in ids
        ]

    async def start(self, nursery: trio.Nursery) -> list[dict[str, Any]]:
        """Start the collector, then the workers; returns each worker's info and location."""
        if self.collector is not None:
            await nursery.start(self.collector.serve)
        infos = [await nursery.start(w.run) for w in self.workers]
        return [{**info, **where(self.host)} for info in infos]

    async def discover(
        self, peers: dict[int, dict[str, str]], expected: list[str], timeout: float
    ) -> dict[int, dict[str, str]]:
        """Learn `peers` (worker id -> authority -> address), then wait until linked to the
        `expected` authorities; returns each worker's peer ids (empty over TCP)."""
        found = {}
        wanted = set(expected) - {self.name}
        with trio.fail_after(timeout):
            for worker in self.workers:
                learnt = peers.get(worker.worker_id, {})
                worker.add_peer_addrs({a: addr for a, addr in learnt.items() if a != self.name})
            for worker in self.workers:
                found[worker.worker_id] = dict(await worker.wait_discovery(wanted))
        return found

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

    async def digests(self) -> dict[str, Any]:
        return self.collector.digests.to_json() if self.collector else {}

    async def collect(self, timeout: float) -> dict[str, Any]:
        """Stats and records once every digest reported reached the collector."""
        with trio.move_on_after(timeout):
            sent = 0
            for worker in self.workers:
                sent += await worker.flush_reports(timeout)
            if (collector := self.collector) is not None:
                await collector.wait_for(lambda: collector.reports >= sent)
        return {
            "authority": self.name,
            "workers": [
                {**w.stats(), "records": w.records_json(), **where(self.host)} for w in self.workers
            ],
            "collector": await self.digests(),
        }

    async def evidence(self) -> list[dict[str, Any]]:
        return [w.evidence() for w in self.workers]
