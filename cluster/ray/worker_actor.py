"""One worker per Ray actor: transport, LevelDB store and pipeline on a trio thread.

A process per worker lets the W workers of an authority use more than one core (and
more than one machine). Lifecycle, driven by the driver: `reserve` ports on this node
-> (the driver builds the committee from every reservation) -> `start` -> `add_peers`
/ `wait_discovery` -> load -> `drain` -> `flush_reports` -> `results` -> `stop`.
A worker restarted on the same node skips `reserve`: its committee entry is unchanged.
Each method crosses into the trio thread once; none is called per transaction.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

import trio

from cluster.committee import free_ports
from cluster.ray.process import location, normal_priority
from cluster.ray.trio_thread import TrioThread
from worker.config import Committee, Parameters
from worker.core.faults import FaultSettings
from worker.keys import KeyPair
from worker.transport.factory import libp2p_key_dir
from worker.worker import Worker

#: Actor methods that may run while another blocks (progress during a drain).
MAX_CONCURRENCY = 4


class WorkerActor:
    def __init__(self, name: str, worker_id: int, host: str, store_dir: str) -> None:
        logging.basicConfig(level=logging.WARNING)
        normal_priority()
        self.name, self.worker_id, self.host = name, worker_id, host
        self.store_dir = Path(store_dir)
        self._loop: TrioThread | None = None
        self._worker: Worker | None = None
        self._peers: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------
    def location(self) -> dict[str, Any]:
        return location(self.host)

    def reserve(self) -> dict[str, str]:
        """Free ports on this node for the committee (bound again by `start`)."""
        tx, w2w = free_ports(2, self.host)
        return {"transactions": f"{self.host}:{tx}", "worker_to_worker": f"{self.host}:{w2w}"}

    def start(
        self, committee_json: str, params_json: str, key_seed: bytes | None = None
    ) -> dict[str, Any]:
        """Open the store, listen, run; returns the worker's info dict plus where it runs."""
        if self._worker is not None:
            raise RuntimeError("this worker actor has already started its worker")
        committee = Committee.model_validate_json(committee_json)
        params = Parameters.model_validate_json(params_json)
        keypair = KeyPair.generate(key_seed) if key_seed is not None else None

        def build() -> Worker:  # in the loop: the worker reads trio's clock
            return Worker(
                committee,
                self.name,
                self.worker_id,
                params,
                self.store_dir,
                metrics_address=(self.host, 0),
                keypair=keypair,
            )

        loop = TrioThread(name=f"worker-{self.worker_id}")
        loop.start()
        try:
            worker = loop.run_sync(build)
            info = loop.start_service(worker.run)
        except BaseException:
            loop.stop()
            raise
        self._loop, self._worker = loop, worker
        self._peers = {peer for peer, _ in committee.peer_workers(self.name, self.worker_id)}
        return {
            **info,
            "peer_id": worker.peer_id,
            "store": str(self.store_dir),
            **self.location(),
        }

    def stop(self, remove_store: bool = False) -> dict[str, Any]:
        """Cancel the worker: its listeners and its store are closed before this returns."""
        if self._loop is not None:
            self._loop.stop()
        closed = self._worker is None or self._worker.store_closed
        if remove_store and closed:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            shutil.rmtree(libp2p_key_dir(self.store_dir), ignore_errors=True)
            impostor = self.store_dir.with_name(self.store_dir.name + ".impostor")
            shutil.rmtree(impostor, ignore_errors=True)
            with contextlib.suppress(OSError):  # the run's directory, once its last store left
                self.store_dir.parent.rmdir()
        return {"store_closed": closed, "crashed": repr(self._loop.error) if self._loop else None}

    def __ray_shutdown__(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    # -- discovery --------------------------------------------------------------------------
    def add_peers(self, addrs: dict[str, str]) -> None:
        """Peers' reported listen addresses (libp2p multiaddrs); TCP already has them."""
        worker, loop = self._running()
        loop.run_sync(worker.add_peer_addrs, addrs)

    def wait_discovery(
        self, timeout: float = 30.0, peers: list[str] | None = None
    ) -> dict[str, Any]:
        """Return once `peers` (default: every committee peer) are reachable."""
        worker, loop = self._running()
        expected = self._peers if peers is None else set(peers)

        async def discover() -> dict[str, Any]:
            try:
                with trio.fail_after(timeout):
                    peer_ids = await worker.wait_discovery(expected)
            except trio.TooSlowError:
                raise TimeoutError(
                    f"discovery of {len(expected)} peer(s) incomplete after {timeout:g} s"
                ) from None
            return {"complete": True, "peers": sorted(expected), "peer_ids": dict(peer_ids)}

        return loop.run(discover)

    # -- load and drain ---------------------------------------------------------------------
    def progress(self) -> dict[str, int]:
        worker, loop = self._running()
        return loop.run_sync(worker.progress)

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is sealed, awaiting quorum or storage; False on timeout."""
        worker, loop = self._running()

        async def drain() -> bool:
            with trio.move_on_after(timeout):
                await worker.wait_idle()
            return worker.idle()

        return loop.run(drain)

    def flush_reports(self, timeout: float = 5.0) -> int:
        """Wait until every digest stored here was sent to the primary; returns how many."""
        worker, loop = self._running()
        return loop.run(worker.flush_reports, timeout)

    # -- observation --------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        """Stats and quorum records, as `local` collects them, plus where the worker ran."""
        worker, loop = self._running()
        stats = loop.run_sync(lambda: {**worker.stats(), "records": worker.records_json()})
        return {**stats, **self.location()}

    def stored_batches(self) -> int:
        worker, loop = self._running()
        return loop.run_sync(worker.stored_count)

    # -- faults and evidence (scenarios) --------------------------------------------------
    def set_faults(self, settings_json: str) -> None:
        """Apply a scenario's fault settings for this worker (empty: honest and healthy)."""
        worker, loop = self._running()
        loop.run_sync(worker.set_faults, FaultSettings.model_validate_json(settings_json))

    def evidence(self) -> dict[str, Any]:
        """What the invariant checker reads: quorum records, the store, what was sent."""
        worker, loop = self._running()
        return loop.run_sync(worker.evidence)

    def impersonate(self, victim: str, peer_addrs: dict[str, str]) -> dict[str, Any]:
        """An extra host of this (Byzantine) authority claims to be `victim`."""
        worker, loop = self._running()
        return loop.run(worker.impersonate, victim, peer_addrs)

    def _running(self) -> tuple[Worker, TrioThread]:
        if self._worker is None or self._loop is None:
            raise RuntimeError("the worker has not been started")
        return self._worker, self._loop
