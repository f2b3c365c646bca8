"""A committee of N authorities x W workers as Ray actors: deploy, discover, drain, stop.

Ports are only known on the node that will listen on them, so deployment is two-phase:
every actor reserves ports on its node and reports them, the committee is built from
the reports, then every actor starts bound to its own entry. Faulty authorities (the
last f, as in the original) reserve an entry and are then killed: they never boot.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from cluster.ray.collector_actor import CollectorActor
from cluster.ray.placement import Placement, RayNode, alive_nodes, pinned, plan_placement
from cluster.ray.worker_actor import MAX_CONCURRENCY, WorkerActor
from worker.config import Authority, Committee, Parameters, PrimaryAddress, WorkerAddresses
from worker.keys import KeyPair, short_name


def get_within(refs: Any, timeout: float, what: str) -> Any:
    try:
        return ray.get(refs, timeout=timeout)
    except GetTimeoutError:
        raise TimeoutError(f"{what}: no answer within {timeout:g} s") from None


@dataclass
class WorkerSlot:
    authority: str
    worker_id: int
    node: RayNode
    host: str
    store_dir: str
    actor: Any = None
    addresses: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{short_name(self.authority)}/w{self.worker_id}"


@dataclass
class AuthoritySlot:
    key: KeyPair
    node: RayNode
    host: str
    live: bool
    collector: Any = None
    address: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.key.name


class RayCommittee:
    def __init__(
        self,
        authorities: int,
        workers: int,
        params: Parameters,
        faults: int = 0,
        store_root: str | None = None,
        placement: Placement | None = None,
        actor_cpus: float = 0.0,
    ) -> None:
        if not 0 <= faults < authorities:
            raise ValueError("faults must be in 0..authorities-1")
        self.n, self.w, self.params, self.faults = authorities, workers, params, faults
        self.placement = placement or plan_placement(alive_nodes(), authorities, workers)
        root = store_root or f"{tempfile.gettempdir()}/narwhal-ray-{uuid.uuid4().hex[:8]}"
        self.store_root = PurePosixPath(root)
        self.actor_cpus = actor_cpus
        keys = sorted((KeyPair.generate() for _ in range(authorities)), key=lambda k: k.name)
        self.authorities = [
            AuthoritySlot(key, home, self.placement.host(home), live=i < authorities - faults)
            for i, (key, home) in enumerate(zip(keys, self.placement.homes, strict=True))
        ]
        self.workers: list[WorkerSlot] = [
            WorkerSlot(
                auth.name,
                wid,
                node,
                self.placement.host(node),
                str(self.store_root / f"{short_name(auth.name)}-w{wid}".replace("/", "_")),
            )
            for auth, nodes_of in zip(self.authorities, self.placement.workers, strict=True)
            for wid, node in enumerate(nodes_of)
        ]
        self.committee: Committee | None = None

    # -- views -----------------------------------------------------------------------------------
    @property
    def live_workers(self) -> list[WorkerSlot]:
        live = {a.name for a in self.authorities if a.live}
        return [w for w in self.workers if w.authority in live]

    @property
    def running_workers(self) -> list[WorkerSlot]:
        """Live workers whose actor is up (not killed and awaiting a restart)."""
        return [w for w in self.live_workers if w.actor is not None]

    @property
    def live_authorities(self) -> list[AuthoritySlot]:
        return [a for a in self.authorities if a.live]

    def workers_of(self, authority: str) -> list[WorkerSlot]:
        return [w for w in self.workers if w.authority == authority]

    def worker(self, authority: str, worker_id: int) -> WorkerSlot:
        for slot in self.workers:
            if slot.authority == authority and slot.worker_id == worker_id:
                return slot
        raise KeyError(f"no worker {worker_id} for authority {authority}")

    # -- deployment --------------------------------------------------------------------------------
    def _new_worker_actor(self, slot: WorkerSlot) -> Any:
        return (
            ray.remote(WorkerActor)
            .options(
                num_cpus=self.actor_cpus,
                max_concurrency=MAX_CONCURRENCY,
                scheduling_strategy=pinned(slot.node),
            )
            .remote(slot.authority, slot.worker_id, slot.host, slot.store_dir)
        )

    def _new_collector_actor(self, auth: AuthoritySlot) -> Any:
        return (
            ray.remote(CollectorActor)
            .options(num_cpus=0, max_concurrency=2, scheduling_strategy=pinned(auth.node))
            .remote(auth.name, auth.host)
        )

    def deploy(self, timeout: float = 60.0, discover: bool = True) -> None:
        """Start every live actor (and complete discovery); raises on any failure."""
        for auth in self.authorities:
            auth.collector = self._new_collector_actor(auth)
        for slot in self.workers:
            slot.actor = self._new_worker_actor(slot)
        addresses = get_within(
            [a.collector.reserve.remote() for a in self.authorities]
            + [w.actor.reserve.remote() for w in self.workers],
            timeout,
            "reserving ports",
        )
        for auth, address in zip(self.authorities, addresses[: len(self.authorities)], strict=True):
            auth.address = address
        for slot, reserved in zip(self.workers, addresses[len(self.authorities) :], strict=True):
            slot.addresses = reserved
        self.committee = self._build_committee()
        for auth in self.authorities:
            if not auth.live:
                self._kill_authority(auth)
        infos = get_within(
            [a.collector.start.remote(a.address) for a in self.live_authorities],
            timeout,
            "starting the collectors",
        )
        for auth, info in zip(self.live_authorities, infos, strict=True):
            auth.info = info
        self._start_workers(self.live_workers, timeout)
        if discover:
            self.discover(self.live_workers, timeout)

    def _build_committee(self) -> Committee:
        return Committee(
            authorities={
                auth.name: Authority(
                    stake=1,
                    primary=PrimaryAddress(worker_to_primary=auth.address),
                    workers={
                        slot.worker_id: WorkerAddresses(**slot.addresses)
                        for slot in self.workers
                        if slot.authority == auth.name
                    },
                )
                for auth in self.authorities
            }
        )

    def _kill_authority(self, auth: AuthoritySlot) -> None:
        ray.kill(auth.collector, no_restart=True)
        auth.collector = None
        for slot in self.workers:
            if slot.authority == auth.name and slot.actor is not None:
                ray.kill(slot.actor, no_restart=True)
                slot.actor = None

    def _start_workers(self, slots: list[WorkerSlot], timeout: float) -> None:
        assert self.committee is not None
        committee_json = self.committee.model_dump_json()
        params_json = self.params.model_dump_json()
        seeds = {a.name: a.key.seed for a in self.authorities}
        infos = get_within(
            [
                # The authority's key on every transport: it signs the libp2p handshake
                # and the worker's hello to its primary.
                s.actor.start.remote(committee_json, params_json, seeds[s.authority])
                for s in slots
            ],
            timeout,
            "starting the workers",
        )
        for slot, info in zip(slots, infos, strict=True):
            slot.info = info

    def discover(self, slots: list[WorkerSlot], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Give `slots` and their peers each other's listen addresses; wait until linked."""
        live = self.running_workers
        fresh = {id(s) for s in slots}
        calls = []
        for slot in live:
            peers = {
                p.authority: p.info["worker_to_worker"]
                for p in live
                if p.worker_id == slot.worker_id
                and p.authority != slot.authority
                and (id(slot) in fresh or id(p) in fresh)  # others learn only what changed
            }
            if peers:
                calls.append(slot.actor.add_peers.remote(peers))
        get_within(calls, timeout, "handing out peer addresses")
        waits = [  # faulty authorities never boot: nobody waits for them
            s.actor.wait_discovery.remote(
                timeout,
                [p.authority for p in live if p.worker_id == s.worker_id and p is not s],
            )
            for s in live
        ]
        return get_within(waits, timeout + 5, "discovery")

    # -- failures ---------------------------------------------------------------------------------
    def kill_worker(self, authority: str, worker_id: int) -> int:
        """`ray.kill` the worker's actor (no graceful stop); returns the killed process id."""
        slot = self.worker(authority, worker_id)
        pid = int(slot.info.get("pid", 0))
        ray.kill(slot.actor, no_restart=True)
        slot.actor = None
        return pid

    def restart_worker(self, authority: str, worker_id: int, timeout: float = 60.0) -> WorkerSlot:
        """A fresh actor on the same node, same store, same committee entry; re-discovered."""
        slot = self.worker(authority, worker_id)
        slot.actor = self._new_worker_actor(slot)
        self._start_workers([slot], timeout)
        self.discover([slot], timeout)
        return slot

    def lose_authority(self, authority: str) -> None:
        """Forget the authority's actors: their machine died with them (nothing to kill)."""
        auth = next(a for a in self.authorities if a.name == authority)
        auth.collector = None
        for slot in self.workers_of(authority):
            slot.actor = None

    def rehome_authority(self, authority: str, moves: dict[str, RayNode], timeout: float) -> None:
        """A lost authority's machine rejoined as new Ray node(s) (`moves`: old node id ->
        new node): pin its actors there and start its collector on its old address. Its
        workers restart with `restart_worker` (same stores, same committee entry)."""
        auth = next(a for a in self.authorities if a.name == authority)
        auth.node = moves.get(auth.node.node_id, auth.node)
        for slot in self.workers_of(authority):
            slot.node = moves.get(slot.node.node_id, slot.node)
        auth.collector = self._new_collector_actor(auth)
        auth.info = get_within(
            auth.collector.start.remote(auth.address), timeout, "restarting the collector"
        )

    # -- load, drain and results -----------------------------------------------------------------
    def progress(self, timeout: float = 5.0) -> dict[str, int]:
        figures = get_within(
            [s.actor.progress.remote() for s in self.running_workers], timeout, "progress"
        )
        return {k: sum(f[k] for f in figures) for k in ("transactions_received", "batches_quorum")}

    def drain(self, timeout: float) -> bool:
        slots = self.running_workers
        return all(
            get_within([s.actor.drain.remote(timeout) for s in slots], timeout + 10, "drain")
        )

    def collect(self, timeout: float = 10.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Workers' results and collectors' digests, once every sent report arrived."""
        slots = self.running_workers
        sent = get_within(
            [s.actor.flush_reports.remote() for s in slots], timeout, "flushing reports"
        )
        expected: dict[str, int] = {}
        for slot, count in zip(slots, sent, strict=True):
            expected[slot.authority] = expected.get(slot.authority, 0) + count
        auths = self.live_authorities
        get_within(
            [a.collector.wait_reports.remote(expected.get(a.name, 0)) for a in auths],
            timeout,
            "collecting reports",
        )
        workers = get_within([s.actor.results.remote() for s in slots], timeout, "worker results")
        collectors = get_within(
            [a.collector.results.remote() for a in auths], timeout, "collectors"
        )
        return workers, {c["authority"]: c for c in collectors}

    # -- shutdown ---------------------------------------------------------------------------------
    def stop(self, remove_stores: bool = True, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Stop every worker (stores closed, ports freed), then end the actors' processes.

        Returns each live worker's stop report; a worker that died meanwhile reports why.
        """
        slots = [s for s in self.workers if s.actor is not None]
        auths = [a for a in self.authorities if a.collector is not None]
        worker_refs = [s.actor.stop.remote(remove_stores) for s in slots]
        collector_refs = [a.collector.stop.remote() for a in auths]
        reports = []
        for slot, ref in zip(slots, worker_refs, strict=True):
            try:
                reports.append({"worker": slot.label, **ray.get(ref, timeout=timeout)})
            except (RayActorError, GetTimeoutError) as exc:
                reports.append({"worker": slot.label, "store_closed": False, "error": repr(exc)})
        for ref in collector_refs:
            with contextlib.suppress(RayActorError, GetTimeoutError):
                ray.get(ref, timeout=timeout)
        self.abort()
        return reports

    def abort(self) -> None:
        """Kill whatever actor is left, without waiting for anything."""
        for slot in self.workers:
            if slot.actor is not None:
                ray.kill(slot.actor, no_restart=True)
                slot.actor = None
        for auth in self.authorities:
            if auth.collector is not None:
                ray.kill(auth.collector, no_restart=True)
                auth.collector = None
