"""The Ray backend: the committee as Ray actors (cluster/ray/), one process per authority
and node it uses (its collector and its workers there), and one load process per node.

Deploy connects to Ray (an embedded instance, or a cluster by address), places one
authority per Ray node where there are enough, and starts the actors; the clients run in
a load actor on their workers' node. A crash is a `ray.kill` of the authority's host
actors, its collector (the primary's side) read and stopped first, as on the local
backend; a restart is fresh hosts on the same Ray nodes with the same stores and keys,
rediscovered. Scenario steps call in from one thread per authority (faults/lanes.py).
An embedded Ray is shut down on stop.

On a lab (`lab` or $NARWHAL_LAB: its state dir) the driver joins the lab's Ray through Ray
Client, and the backend can also fault the network in the kernel and crash whole machines
(cluster/backends/lab_network.py); a crashed machine's actors come back on its new node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from cluster.backends.crashed import Crashed
from cluster.backends.lab_network import LabNetwork, lab_dir
from cluster.experiment import ExperimentConfig
from cluster.ray.committee import RayCommittee, get_within
from cluster.ray.connect import connect
from cluster.ray.load import RayLoad
from cluster.ray.placement import Placement, RayNode, alive_nodes, plan_placement
from faults.scenario import ScenarioError
from metrics.service_discovery import MetricsTarget, write_targets
from worker.core.faults import FaultSettings
from worker.keys import short_name

log = logging.getLogger(__name__)
CALL_TIMEOUT = 60.0
#: how long a restarted lab machine's Ray node may take to join the head
REJOIN_TIMEOUT = 120.0


def metrics_targets(committee: RayCommittee) -> list[MetricsTarget]:
    """Prometheus targets of every running worker (their ports change on a restart)."""
    return [
        MetricsTarget(s.info["metrics"], short_name(s.authority), s.worker_id)
        for s in committee.workers
        if s.actor is not None and s.info.get("metrics")
    ]


def write_ray_targets(committee: RayCommittee, path: Path) -> None:
    write_targets(path, metrics_targets(committee))


def _describe(placement: Placement) -> str:
    distinct = len({n.node_id for n in placement.homes})
    return f"{len(placement.homes)} authorities on {distinct} distinct node(s)"


class RayBackend:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        lab: str | Path | None = None,
    ) -> None:
        state_dir = lab_dir(lab)
        #: the lab this runs on (kernel faults, machine crashes), or None
        self.lab = LabNetwork(state_dir) if state_dir is not None else None
        if address is None and self.lab is not None:
            address = self.lab.ray_address
        #: None: an embedded local Ray; "auto", host:port or ray://: join that cluster.
        self.address, self.num_cpus = address, num_cpus
        self._crashed = Crashed()
        self._machines_down: dict[int, tuple[str, ...]] = {}
        self.committee: RayCommittee | None = None
        self._connected = False
        self._load: RayLoad | None = None
        self._impostors: list[Any] = []
        self._remove_stores = True

    @property
    def _c(self) -> RayCommittee:
        assert self.committee is not None, "not deployed"
        return self.committee

    # -- deploy and discover ----------------------------------------------------------------
    def deploy(self, cfg: ExperimentConfig, note: Callable[[str], None]) -> list[str]:
        self.timeout = cfg.startup_timeout or 120.0
        self._remove_stores = cfg.store_dir is None
        self._connected = connect(self.address, self.num_cpus)
        nodes = alive_nodes()
        placement = plan_placement(nodes, cfg.authorities, cfg.workers)
        where = f"Ray at {self.address}" if self.address else "an embedded Ray"
        note(f"{where}: {len(nodes)} node(s); {_describe(placement)}")
        if placement.note:
            note(f"note: {placement.note}")
        self.committee = RayCommittee(
            cfg.authorities,
            cfg.workers,
            cfg.params,
            cfg.faults,
            store_root=str(cfg.store_dir) if cfg.store_dir else None,
            placement=placement,
        )
        self.committee.deploy(self.timeout, discover=False)
        note(f"{len(self.committee.live_workers)} worker(s) listening")
        if self.lab is not None:
            self._bind_lab(self.lab)
            note(f"on the lab {self.lab.state.plan.state_dir}: {self.lab.machines}")
        return [a.name for a in self.committee.authorities]

    def _bind_lab(self, lab: LabNetwork) -> None:
        c = self._c
        ports = {int(s.addresses["worker_to_worker"].rpartition(":")[2]) for s in c.workers}
        ips = [{a.node.ip} | {s.node.ip for s in c.workers_of(a.name)} for a in c.authorities]
        lab.bind([a.name for a in c.authorities], ips, ports)

    def discover(self) -> None:
        self._c.discover(self.timeout)

    def metrics_targets(self) -> list[MetricsTarget]:
        return metrics_targets(self._c)

    # -- load -------------------------------------------------------------------------------
    def start_load(self, rate: int, tx_size: int, duration: float) -> None:
        self._load = RayLoad(self._c, self.timeout)
        self._load.start(rate, tx_size, duration)

    def wait_load(self, timeout: float) -> list[dict[str, Any]] | None:
        assert self._load is not None
        reports = self._load.wait(timeout)
        if reports is not None:
            self._load.stop()
        return reports

    def progress(self) -> dict[str, int] | None:
        try:
            return self._c.progress(timeout=2.0)
        except TimeoutError:
            return None  # a busy worker answers late: skip this tick

    # -- scenario steps (faults.runner.ScenarioRun) ----------------------------------------
    @property
    def on_lab(self) -> bool:
        return self.lab is not None

    def _on_lab(self, what: str) -> LabNetwork:
        if self.lab is None:
            raise ScenarioError(
                "lab_required", f"{what} needs a lab: NARWHAL_LAB=STATE_DIR (docs/lab.md)"
            )
        return self.lab

    def crash(self, index: int) -> None:
        name = self._c.authorities[index].name
        self._crashed.keep(name, self._c.crash_authority(name, CALL_TIMEOUT))

    def crash_machine(self, index: int) -> None:
        """Every process of the authority's machine(s) killed at once, its collector too: what
        the collector already received is read first (the primary's records survive)."""
        lab = self._on_lab("a machine crash")
        auth = self._c.authorities[index]
        self._crashed.keep(auth.name, self._c.freeze_authority(auth.name, CALL_TIMEOUT))
        self._machines_down[index] = lab.crash(index)
        self._c.lose_authority(auth.name)

    def _rejoin(self, index: int, machines: tuple[str, ...]) -> None:
        """Boot the machines again, wait for their new Ray nodes, re-home the authority."""
        lab = self._on_lab("a machine restart")
        c, name = self._c, self._c.authorities[index].name
        old = {h.node.node_id: h.node for h in c.authorities[index].hosts}
        for m in machines:
            lab.restart(m)
        deadline = time.monotonic() + REJOIN_TIMEOUT
        moves: dict[str, RayNode] = {}
        while len(moves) < len(old):
            fresh = {n.ip: n for n in alive_nodes() if n.node_id not in old}
            moves = {nid: fresh[n.ip] for nid, n in old.items() if n.ip in fresh}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{machines}: no new Ray node within {REJOIN_TIMEOUT:g} s")
            time.sleep(0.5)  # polling Ray's node table: no event to await from the driver
        c.rehome_authority(name, moves)

    def restart(self, index: int) -> None:
        machines = self._machines_down.pop(index, None)
        if machines is not None:
            self._rejoin(index, machines)
        self._c.restart_authority(self._c.authorities[index].name, CALL_TIMEOUT)

    def set_faults(self, index: int, settings: FaultSettings) -> None:
        name = self._c.authorities[index].name
        self._c.set_faults(name, settings.model_dump_json(), CALL_TIMEOUT)

    def set_network(self, index: int, settings: FaultSettings) -> None:
        self._on_lab("network: kernel").apply(index, settings)

    def impersonate(self, index: int, victim: int) -> None:
        victim_name = self._c.authorities[victim].name
        peers: dict[int, dict[str, str]] = {}
        for p in self._c.workers:
            if p.info:
                peers.setdefault(p.worker_id, {})[p.authority] = p.info["worker_to_worker"]
        for h in self._c.authorities[index].hosts:
            if h.actor is not None:
                self._impostors.append(h.actor.impersonate.remote(victim_name, peers))

    def impersonations(self) -> list[dict[str, Any]]:
        done = [get_within(ref, CALL_TIMEOUT, "impersonation") for ref in self._impostors]
        return [attempt for attempts in done for attempt in attempts]

    def evidence(self) -> list[dict[str, Any]]:
        return [self._crashed.evidence(e) for e in self._c.evidence(CALL_TIMEOUT)]

    # -- drain, collect, stop -------------------------------------------------------------
    def drain(self, timeout: float) -> bool:
        return self._c.drain(timeout)

    def collect(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        workers, collectors = self._c.collect(CALL_TIMEOUT)
        return [self._crashed.worker(w) for w in workers], {
            name: self._crashed.collector(name, c["digests"]) for name, c in collectors.items()
        }

    def placement(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        homes = {
            a.name: {"ray_node_id": a.node.node_id, "ray_node_ip": a.node.ip}
            for a in self._c.authorities
        }
        return homes, self._c.placement.note

    def stop(self) -> None:
        try:
            if self.lab is not None:
                self.lab.clear()
            if self._load is not None:
                self._load.stop()
            if self.committee is not None:
                stopped = self.committee.stop(remove_stores=self._remove_stores)
                if not all(s["stores_closed"] for s in stopped):
                    log.warning("some worker did not stop cleanly: %s", stopped)
        finally:
            self.committee = self._load = None
            if self._connected:
                ray.shutdown()
                self._connected = False
