"""One actor process per authority and Ray node: its collector and its workers there.

An authority's digest collector (on its home node) and the workers placed on that node
share one process, hosted by `AuthorityHost` (cluster/authority.py, as on the local
backend) on one trio thread. A process costs ~100 MB and Ray's own threads, so N
authorities on one machine are N processes (plus one load process per node,
cluster/ray/load_actor.py), not one per worker, collector and client. Workers placed on
other nodes of a big cluster get a host of their own there.

The actor is built blank so that one can be started ahead of need (a spare for a
restart, see `RayCommittee`): `reserve` picks ports on its node, and `start` binds the
committee entry it is given. Each method crosses into the trio thread once and serves
every worker of the host; none is called per transaction.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from cluster.authority import AuthorityHost
from cluster.committee import free_ports
from cluster.ray.process import location, normal_priority
from cluster.ray.trio_thread import TrioThread
from worker.config import Committee, Parameters
from worker.keys import KeyPair
from worker.transport.factory import libp2p_key_dir

#: What a spare imports ahead of its start, by transport (the start's slowest import;
#: worker/transport/factory.py imports them lazily, so that TCP runs never load libp2p).
TRANSPORT_MODULES = {"tcp": "worker.transport.tcp", "libp2p": "worker.transport.libp2p.transport"}
#: Actor methods that may run while another blocks (progress during a drain, an
#: impersonation that runs for the rest of the load).
MAX_CONCURRENCY = 8


class HostActor:
    def __init__(self) -> None:
        logging.basicConfig(level=logging.WARNING)
        normal_priority()
        self.bind = ""
        self._loop: TrioThread | None = None
        self._host: AuthorityHost | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def ready(self, transport: str | None = None) -> int:
        """Answered once the process is up, with `transport`'s modules imported: its pid."""
        if transport is not None:
            importlib.import_module(TRANSPORT_MODULES[transport])
        return os.getpid()

    def location(self) -> dict[str, Any]:
        return location(self.bind)

    def reserve(
        self, bind: str, worker_ids: list[int], collector: bool, avoid: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Free ports on this node for the committee entry (bound again by `start`), none
        of the host:ports in `avoid` (other hosts' reservations)."""
        self.bind = bind
        skip = {int(a.rsplit(":", 1)[1]) for a in avoid if a.rsplit(":", 1)[0] == bind}
        ports = iter(free_ports(2 * len(worker_ids) + int(collector), bind, skip))
        primary = f"{bind}:{next(ports)}" if collector else None
        workers = {
            wid: {
                "transactions": f"{bind}:{next(ports)}",
                "worker_to_worker": f"{bind}:{next(ports)}",
            }
            for wid in worker_ids
        }
        return {"primary": primary, "workers": workers}

    def start(
        self,
        committee_json: str,
        params_json: str,
        seed: bytes,
        store: str,
        worker_ids: list[int],
        collector: bool,
        bind: str,
    ) -> dict[str, Any]:
        """Open the stores, listen, run: the collector's and every worker's info, and where."""
        if self._host is not None:
            raise RuntimeError("this host actor has already started")
        self.bind = bind
        committee = Committee.model_validate_json(committee_json)
        params = Parameters.model_validate_json(params_json)
        keypair = KeyPair.generate(seed)

        def build() -> AuthorityHost:  # in the loop: the workers read trio's clock
            return AuthorityHost(committee, params, keypair, Path(store), worker_ids, collector)

        async def serve(task_status: trio.TaskStatus[list[dict[str, Any]]]) -> None:
            async with trio.open_nursery() as nursery:
                task_status.started(await host.start(nursery))

        loop = TrioThread(name=f"host-{keypair.name[:8]}")
        loop.start()
        try:
            host = loop.run_sync(build)
            infos = loop.start_service(serve)
        except BaseException:
            loop.stop()
            raise
        self._loop, self._host = loop, host
        here = self.location()
        workers = [
            {**info, "peer_id": w.peer_id, "store": str(w.store_dir), **here}
            for w, info in zip(host.workers, infos, strict=True)
        ]
        primary = committee.authorities[keypair.name].primary.worker_to_primary
        return {
            "collector": {"authority": keypair.name, "worker_to_primary": primary, **here}
            if collector
            else None,
            "workers": workers,
        }

    def stop(self, remove_stores: bool = False) -> dict[str, Any]:
        """Cancel everything: listeners and stores are closed before this returns."""
        if self._loop is not None:
            self._loop.stop()
        host = self._host
        closed = host is None or host.stores_closed
        if remove_stores and closed and host is not None:
            for w in host.workers:
                shutil.rmtree(w.store_dir, ignore_errors=True)
                shutil.rmtree(libp2p_key_dir(w.store_dir), ignore_errors=True)
                shutil.rmtree(w.store_dir.with_name(w.store_dir.name + ".impostor"), True)
            for directory in (host.store, host.store.parent):  # once their last store left
                with contextlib.suppress(OSError):
                    directory.rmdir()
        return {
            "stores_closed": closed,
            "workers": [w.worker_id for w in host.workers] if host else [],
            "crashed": repr(self._loop.error) if self._loop else None,
        }

    def __ray_shutdown__(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    # -- discovery --------------------------------------------------------------------------
    def learn(self, peers: dict[int, dict[str, str]]) -> None:
        """Peers' listen addresses (worker id -> authority -> address)."""
        host, loop = self._running()
        loop.run_sync(host.learn, peers)

    def wait_discovery(self, timeout: float, expected: list[str]) -> dict[str, Any]:
        """Return once every worker here is linked to each `expected` authority."""
        host, loop = self._running()

        async def discover() -> dict[int, dict[str, str]]:
            return await host.discover({}, expected, timeout)

        try:
            found = loop.run(discover)
        except trio.TooSlowError:
            raise TimeoutError(
                f"discovery of {len(expected)} peer(s) incomplete after {timeout:g} s"
            ) from None
        return {"complete": True, "peers": sorted(set(expected) - {host.name}), "peer_ids": found}

    def linked(self, expected: list[str], timeout: float) -> list[str]:
        """The `expected` authorities some worker here is still not linked to after `timeout`."""
        host, loop = self._running()
        return loop.run(host.linked, expected, timeout)

    # -- load, faults, drain --------------------------------------------------------------
    def progress(self) -> dict[str, int]:
        host, loop = self._running()
        return loop.run(host.progress)

    def set_faults(self, settings_json: str) -> None:
        host, loop = self._running()
        loop.run(host.set_faults, settings_json)

    def impersonate(self, victim: str, peers: dict[int, dict[str, str]]) -> list[dict[str, Any]]:
        """An extra host per worker of this (Byzantine) authority claims to be `victim`."""
        host, loop = self._running()
        return loop.run(host.impersonate, victim, peers)

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is sealed, awaiting quorum or storage; False on timeout."""
        host, loop = self._running()
        return loop.run(host.drain, timeout)

    def freeze(self) -> dict[str, Any]:
        """Stop the collector and return its digests (a crash of this process follows)."""
        host, loop = self._running()
        return loop.run(host.freeze)

    # -- results ----------------------------------------------------------------------------
    def flush_reports(self, timeout: float = 5.0) -> int:
        host, loop = self._running()
        return loop.run(host.flush_reports, timeout)

    def wait_reports(self, expected: int, timeout: float = 5.0) -> int:
        host, loop = self._running()
        return loop.run(host.wait_reports, expected, timeout)

    def results(self) -> dict[str, Any]:
        """Workers' stats and quorum records (with where they ran), and the collector's."""
        host, loop = self._running()
        out = loop.run_sync(host.results)
        here = self.location()
        out["workers"] = [{**w, **here} for w in out["workers"]]
        return out

    def evidence(self) -> list[dict[str, Any]]:
        host, loop = self._running()
        return loop.run(host.evidence)

    def stored_batches(self, worker_id: int) -> int:
        host, loop = self._running()
        return loop.run_sync(host.stored_batches, worker_id)

    def _running(self) -> tuple[AuthorityHost, TrioThread]:
        if self._host is None or self._loop is None:
            raise RuntimeError("the host has not been started")
        return self._host, self._loop
