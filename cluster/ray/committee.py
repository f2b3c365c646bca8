"""A committee of N authorities x W workers as Ray actors: deploy, discover, drain, stop.

Each authority runs as one host actor per Ray node it uses (cluster/ray/host_actor.py):
the home node's host holds its collector and the workers placed there, so on one
machine an authority is one process. Ports are only known on the node that will listen
on them, so deployment is two-phase: every host reserves ports on its node and reports
them, the committee is built from the reports, then every host starts bound to its own
entries. Faulty authorities (the last f, as in the original) reserve an entry and are
then killed: they never boot.

A crash kills an authority's hosts; its collector, which stands for the primary, is
stopped and read first. A restart starts fresh hosts on the same nodes, stores and
committee entries, preferably in a spare process started when the crash happened (a
restart then pays for the worker's start, not for Python's and Ray's), and rediscovers
them. Crashes and restarts of different authorities may run at once (one thread per
authority, faults/lanes.py): a peer that dies during a rediscovery is left out.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from cluster.ray.host_actor import MAX_CONCURRENCY, HostActor
from cluster.ray.placement import Placement, RayNode, alive_nodes, pinned, plan_placement
from worker.config import Authority, Committee, Parameters, PrimaryAddress, WorkerAddresses
from worker.keys import KeyPair, short_name

#: seconds a restarted host waits for its links before looking again at who is up
REDISCOVERY_SLICE = 2.0


def get_within(refs: Any, timeout: float, what: str) -> Any:
    try:
        return ray.get(refs, timeout=timeout)
    except GetTimeoutError:
        raise TimeoutError(f"{what}: no answer within {timeout:g} s") from None


@dataclass
class HostSlot:
    """One host actor: an authority's collector (on its home node) and its workers there."""

    authority: str
    node: RayNode
    bind: str
    worker_ids: tuple[int, ...]
    collector: bool
    actor: Any = None


@dataclass
class WorkerSlot:
    authority: str
    worker_id: int
    node: RayNode
    host: str
    store_dir: str
    proc: HostSlot
    addresses: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> Any:
        """The host actor this worker runs in (None while crashed)."""
        return self.proc.actor

    @property
    def label(self) -> str:
        return f"{short_name(self.authority)}/w{self.worker_id}"


@dataclass
class AuthoritySlot:
    key: KeyPair
    node: RayNode
    host: str
    live: bool
    store: str
    hosts: list[HostSlot] = field(default_factory=list)
    address: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def running(self) -> bool:
        return all(h.actor is not None for h in self.hosts)


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
        spares: bool = True,
    ) -> None:
        if not 0 <= faults < authorities:
            raise ValueError("faults must be in 0..authorities-1")
        self.n, self.w, self.params, self.faults = authorities, workers, params, faults
        self.placement = placement or plan_placement(alive_nodes(), authorities, workers)
        root = store_root or f"{tempfile.gettempdir()}/narwhal-ray-{uuid.uuid4().hex[:8]}"
        self.store_root = PurePosixPath(root)
        self.actor_cpus = actor_cpus
        #: start a spare host process on a crashed authority's node(s) for its restart
        self.spares = spares
        self._spare: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        keys = sorted((KeyPair.generate() for _ in range(authorities)), key=lambda k: k.name)
        self.authorities: list[AuthoritySlot] = []
        self.workers: list[WorkerSlot] = []
        homes, spread = self.placement.homes, self.placement.workers
        for i, (key, home, nodes_of) in enumerate(zip(keys, homes, spread, strict=True)):
            store = str(self.store_root / short_name(key.name).replace("/", "_"))
            auth = AuthoritySlot(
                key, home, self.placement.host(home), i < authorities - faults, store
            )
            by_node: dict[str, list[int]] = {home.node_id: []}
            nodes = {home.node_id: home}
            for wid, node in enumerate(nodes_of):
                by_node.setdefault(node.node_id, []).append(wid)
                nodes[node.node_id] = node
            for node_id, wids in by_node.items():
                node = nodes[node_id]
                proc = HostSlot(
                    key.name, node, self.placement.host(node), tuple(wids), node_id == home.node_id
                )
                auth.hosts.append(proc)
                self.workers += [
                    WorkerSlot(key.name, wid, node, proc.bind, f"{store}/worker-{wid}", proc)
                    for wid in wids
                ]
            self.authorities.append(auth)
        order = {k.name: i for i, k in enumerate(keys)}
        self.workers.sort(key=lambda s: (order[s.authority], s.worker_id))
        self.committee: Committee | None = None

    # -- views -----------------------------------------------------------------------------------
    @property
    def live_workers(self) -> list[WorkerSlot]:
        live = {a.name for a in self.authorities if a.live}
        return [w for w in self.workers if w.authority in live]

    @property
    def running_workers(self) -> list[WorkerSlot]:
        """Live workers whose host is up (not crashed and awaiting a restart)."""
        return [w for w in self.live_workers if w.actor is not None]

    @property
    def live_authorities(self) -> list[AuthoritySlot]:
        return [a for a in self.authorities if a.live]

    @property
    def running_hosts(self) -> list[HostSlot]:
        return [h for a in self.live_authorities for h in a.hosts if h.actor is not None]

    def authority(self, name: str) -> AuthoritySlot:
        return next(a for a in self.authorities if a.name == name)

    def workers_of(self, authority: str) -> list[WorkerSlot]:
        return [w for w in self.workers if w.authority == authority]

    def worker(self, authority: str, worker_id: int) -> WorkerSlot:
        for slot in self.workers:
            if slot.authority == authority and slot.worker_id == worker_id:
                return slot
        raise KeyError(f"no worker {worker_id} for authority {authority}")

    # -- host processes --------------------------------------------------------------------------
    def _new_actor(self, node: RayNode) -> Any:
        return (
            ray.remote(HostActor)
            .options(
                num_cpus=self.actor_cpus,
                max_concurrency=MAX_CONCURRENCY,
                scheduling_strategy=pinned(node),
            )
            .remote()
        )

    def _host_actor(self, node: RayNode) -> Any:
        """A spare already started on `node` if there is one, else a new actor."""
        with self._lock:
            spares = self._spare.get(node.node_id, [])
            if spares:
                return spares.pop()
        return self._new_actor(node)

    def _prepare_spare(self, node: RayNode) -> None:
        """Start a blank host on `node` now, for the restart that will follow a crash."""
        actor = self._new_actor(node)
        actor.ready.remote(self.params.transport)  # not awaited: it starts while down
        with self._lock:
            self._spare.setdefault(node.node_id, []).append(actor)

    # -- deployment --------------------------------------------------------------------------------
    def deploy(self, timeout: float = 60.0, discover: bool = True) -> None:
        """Start every live host (and complete discovery); raises on any failure."""
        hosts = [h for a in self.authorities for h in a.hosts]
        for h in hosts:
            h.actor = self._new_actor(h.node)
        reserved = get_within(
            [h.actor.reserve.remote(h.bind, list(h.worker_ids), h.collector) for h in hosts],
            timeout,
            "reserving ports",
        )
        reserved = self._distinct(hosts, reserved, timeout)
        for h, ports in zip(hosts, reserved, strict=True):
            if h.collector:
                self.authority(h.authority).address = ports["primary"]
            for wid, addresses in ports["workers"].items():
                self.worker(h.authority, int(wid)).addresses = addresses
        self.committee = self._build_committee()
        for auth in self.authorities:
            if not auth.live:
                self._kill_hosts(auth)
        self._start_hosts(self.running_hosts, timeout)
        if discover:
            self.discover(timeout)

    def _distinct(
        self, hosts: list[HostSlot], reserved: list[dict[str, Any]], timeout: float
    ) -> list[dict[str, Any]]:
        """Hosts on one node pick their ports independently (and release them until they
        bind), so two may pick the same one: such a host picks again, avoiding the rest."""
        taken: set[str] = set()
        out = []
        for h, ports in zip(hosts, reserved, strict=True):
            if _reserved(ports) & taken:
                avoid = sorted(taken)
                ports = get_within(
                    [h.actor.reserve.remote(h.bind, list(h.worker_ids), h.collector, avoid)],
                    timeout,
                    "reserving ports again",
                )[0]
            taken |= _reserved(ports)
            out.append(ports)
        return out

    def _build_committee(self) -> Committee:
        return Committee(
            authorities={
                auth.name: Authority(
                    stake=1,
                    primary=PrimaryAddress(worker_to_primary=auth.address),
                    workers={
                        slot.worker_id: WorkerAddresses(**slot.addresses)
                        for slot in self.workers_of(auth.name)
                    },
                )
                for auth in self.authorities
            }
        )

    def _kill_hosts(self, auth: AuthoritySlot) -> None:
        for h in auth.hosts:
            if h.actor is not None:
                ray.kill(h.actor, no_restart=True)
                h.actor = None

    def _start_hosts(
        self, hosts: list[HostSlot], timeout: float, actors: list[Any] | None = None
    ) -> None:
        """Start `hosts` (in `actors`, default their own); a host's actor is set once it
        runs, so that nobody else calls a host that has not started."""
        assert self.committee is not None
        actors = actors or [h.actor for h in hosts]
        committee_json = self.committee.model_dump_json()
        params_json = self.params.model_dump_json()
        calls = []
        for h, actor in zip(hosts, actors, strict=True):
            auth = self.authority(h.authority)
            # The authority's key on every transport: it signs the libp2p handshake and
            # the workers' hello to their primary.
            calls.append(
                actor.start.remote(
                    committee_json,
                    params_json,
                    auth.key.seed,
                    auth.store,
                    list(h.worker_ids),
                    h.collector,
                    h.bind,
                )
            )
        try:
            started_all = get_within(calls, timeout, "starting the hosts")
        except BaseException:
            for actor in actors:  # none of them is anybody's host yet
                ray.kill(actor, no_restart=True)
            for h in hosts:
                h.actor = None
            raise
        for h, actor, started in zip(hosts, actors, started_all, strict=True):
            if started["collector"] is not None:
                self.authority(h.authority).info = started["collector"]
            for info in started["workers"]:
                self.worker(h.authority, info["worker_id"]).info = info
            h.actor = actor

    def _addresses(self) -> dict[int, dict[str, str]]:
        """Every running worker's listen address: worker id -> authority -> address."""
        out: dict[int, dict[str, str]] = {}
        for s in self.running_workers:
            out.setdefault(s.worker_id, {})[s.authority] = s.info["worker_to_worker"]
        return out

    def _running_names(self) -> list[str]:
        return [a.name for a in self.live_authorities if a.running]

    def discover(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Give every running host its peers' listen addresses; wait until all are linked."""
        hosts = self.running_hosts
        addresses = self._addresses()
        get_within(
            [h.actor.learn.remote(addresses) for h in hosts], timeout, "handing out addresses"
        )
        names = self._running_names()  # faulty authorities never boot: nobody waits for them
        waits = [h.actor.wait_discovery.remote(timeout, names) for h in hosts]
        return get_within(waits, timeout + 5, "discovery")

    def _rediscover(self, auth: AuthoritySlot, timeout: float) -> None:
        """The restarted authority and its peers learn each other's addresses; returns once
        it is linked to every peer still up (a peer that crashes meanwhile is left out)."""
        fresh = auth.hosts
        news = {
            s.worker_id: {auth.name: s.info["worker_to_worker"]} for s in self.workers_of(auth.name)
        }
        addresses = self._addresses()
        calls = [(h, h.actor, addresses) for h in fresh]
        calls += [(h, h.actor, news) for h in self.running_hosts if h.authority != auth.name]
        refs = [(h, actor, actor.learn.remote(peers)) for h, actor, peers in calls if actor]
        for h, actor, ref in refs:
            try:
                get_within(ref, timeout, "handing out addresses")
            except RayActorError:
                if h.actor is actor:  # not crashed by another lane: a real failure
                    raise
        deadline = time.monotonic() + timeout
        while True:
            up = [n for n in self._running_names() if n != auth.name]
            refs = [h.actor.linked.remote(up, REDISCOVERY_SLICE) for h in fresh]
            missing = {m for got in get_within(refs, timeout, "rediscovery") for m in got}
            missing &= set(self._running_names())  # still up now
            if not missing:
                return
            if time.monotonic() > deadline:
                names = ", ".join(sorted(short_name(m) for m in missing))
                raise TimeoutError(f"restart of {short_name(auth.name)}: not linked to {names}")

    # -- failures ---------------------------------------------------------------------------------
    def freeze_authority(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Stop the authority's collector and read what its process(es) know that a crash
        would lose: the collector's digests and the workers' quorum records (see
        cluster/backends/crashed.py). Nothing is confirmed to a worker after this."""
        auth = self.authority(name)
        hosts = [h for h in auth.hosts if h.actor is not None]
        frozen = get_within(
            [h.actor.freeze.remote() for h in hosts], timeout, "freezing the authority"
        )
        records = {wid: r for f in frozen for wid, r in f["records"].items()}
        digests = next(
            (f["digests"] for h, f in zip(hosts, frozen, strict=True) if h.collector), {}
        )
        return {"digests": digests, "records": records}

    def crash_authority(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Kill the authority's hosts abruptly, once frozen (`freeze_authority`: what it
        returns is returned)."""
        auth = self.authority(name)
        frozen = self.freeze_authority(name, timeout)
        self._kill_hosts(auth)
        if self.spares:
            for h in auth.hosts:
                self._prepare_spare(h.node)
        return frozen

    def restart_authority(self, name: str, timeout: float = 60.0) -> None:
        """Fresh hosts on the same nodes, stores and committee entries; rediscovered."""
        auth = self.authority(name)
        down = [h for h in auth.hosts if h.actor is None]
        self._start_hosts(down, timeout, [self._host_actor(h.node) for h in down])
        self._rediscover(auth, timeout)

    def lose_authority(self, name: str) -> None:
        """Forget the authority's hosts: their machine died with them (nothing to kill)."""
        for h in self.authority(name).hosts:
            h.actor = None

    def rehome_authority(self, name: str, moves: dict[str, RayNode]) -> None:
        """A lost authority's machine rejoined as new Ray node(s) (`moves`: old node id ->
        new node): its hosts go there at `restart_authority` (same stores and entries)."""
        auth = self.authority(name)
        auth.node = moves.get(auth.node.node_id, auth.node)
        for h in auth.hosts:
            h.node = moves.get(h.node.node_id, h.node)
        for slot in self.workers_of(name):
            slot.node = moves.get(slot.node.node_id, slot.node)

    # -- load, drain and results -----------------------------------------------------------------
    def progress(self, timeout: float = 5.0) -> dict[str, int]:
        figures = get_within(
            [h.actor.progress.remote() for h in self.running_hosts], timeout, "progress"
        )
        return {k: sum(f[k] for f in figures) for k in ("transactions_received", "batches_quorum")}

    def drain(self, timeout: float) -> bool:
        hosts = self.running_hosts
        return all(
            get_within([h.actor.drain.remote(timeout) for h in hosts], timeout + 10, "drain")
        )

    def collect(self, timeout: float = 10.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Workers' results and collectors' digests, once every sent report arrived."""
        hosts = self.running_hosts
        sent = get_within([h.actor.flush_reports.remote() for h in hosts], timeout, "flushing")
        expected: dict[str, int] = {}
        for h, count in zip(hosts, sent, strict=True):
            expected[h.authority] = expected.get(h.authority, 0) + count
        homes = [h for h in hosts if h.collector]
        get_within(
            [h.actor.wait_reports.remote(expected.get(h.authority, 0)) for h in homes],
            timeout,
            "collecting reports",
        )
        results = get_within([h.actor.results.remote() for h in hosts], timeout, "results")
        workers = sorted(
            (w for r in results for w in r["workers"]),
            key=lambda w: (self._order(w["authority"]), w["worker_id"]),
        )
        collectors = {
            r["authority"]: {
                "authority": r["authority"],
                "digests": r["collector"],
                "reports": r["reports"],
                "rejections": r["rejections"],
            }
            for h, r in zip(hosts, results, strict=True)
            if h.collector
        }
        return workers, collectors

    def _order(self, name: str) -> int:
        return next(i for i, a in enumerate(self.authorities) if a.name == name)

    def evidence(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        refs = [h.actor.evidence.remote() for h in self.running_hosts]
        return [e for got in get_within(refs, timeout, "evidence") for e in got]

    def set_faults(self, name: str, settings_json: str, timeout: float = 60.0) -> None:
        auth = self.authority(name)
        refs = [h.actor.set_faults.remote(settings_json) for h in auth.hosts if h.actor]
        get_within(refs, timeout, "applying fault settings")

    # -- shutdown ---------------------------------------------------------------------------------
    def stop(self, remove_stores: bool = True, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Stop every host (stores closed, ports freed), then end the actors' processes.

        Returns each live host's stop report; a host that died meanwhile reports why.
        """
        hosts = [h for a in self.authorities for h in a.hosts if h.actor is not None]
        refs = [h.actor.stop.remote(remove_stores) for h in hosts]
        reports = []
        for h, ref in zip(hosts, refs, strict=True):
            label = f"{short_name(h.authority)}@{h.node.node_id[:8]}"
            try:
                reports.append({"host": label, **ray.get(ref, timeout=timeout)})
            except (RayActorError, GetTimeoutError) as exc:
                reports.append({"host": label, "stores_closed": False, "error": repr(exc)})
        self.abort()
        return reports

    def abort(self) -> None:
        """Kill whatever actor is left (spares too), without waiting for anything."""
        for auth in self.authorities:
            self._kill_hosts(auth)
        with self._lock:
            spares = [a for node in self._spare.values() for a in node]
            self._spare.clear()
        for actor in spares:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)


def _reserved(ports: dict[str, Any]) -> set[str]:
    """Every host:port of one host's reservation."""
    found = {ports["primary"]} if ports.get("primary") else set()
    for addresses in ports["workers"].values():
        found |= set(addresses.values())
    return found
