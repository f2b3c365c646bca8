"""`narwhal-testbed run`: the committee as Ray actors, driven by load-client actors.

Steps: connect to Ray -> place and deploy the committee (ports, committee, start,
discovery) -> start the clients together -> load for `duration` s with progress ->
drain -> collect results and digests -> stop every actor -> summary. Whatever fails,
the actors are stopped (or killed) and an embedded Ray is shut down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray

from cluster.backends.local import LocalRunConfig
from cluster.ray.committee import RayCommittee
from cluster.ray.connect import connect
from cluster.ray.load import RayLoad, per_client_rate
from cluster.ray.placement import Placement, alive_nodes, plan_placement
from cluster.ray.report import build_summary
from metrics.service_discovery import MetricsTarget, write_targets
from worker.keys import short_name

log = logging.getLogger(__name__)


class RunObserver(Protocol):
    """What the driver reports while it runs (the CLI shows it with rich)."""

    def note(self, message: str) -> None: ...

    def load_started(self, duration: float) -> None: ...

    def load_tick(self, elapsed: float, live: dict[str, int] | None) -> None: ...

    def load_done(self) -> None: ...


class QuietObserver:
    def note(self, message: str) -> None:
        log.info("%s", message)

    def load_started(self, duration: float) -> None:
        pass

    def load_tick(self, elapsed: float, live: dict[str, int] | None) -> None:
        pass

    def load_done(self) -> None:
        pass


@dataclass
class RayRunConfig(LocalRunConfig):
    """`local`'s settings (same `describe()` keys), defaults of the original benchmark."""

    rate: int = 20_000
    duration: float = 30.0
    #: None: an embedded local Ray; "auto" or host:port: join that cluster.
    address: str | None = None
    #: CPUs of an embedded Ray (None: all cores). Actors ask for none: placement pins them.
    num_cpus: int | None = None
    startup_timeout: float = 120.0


def run_ray(cfg: RayRunConfig, observer: RunObserver | None = None) -> dict[str, Any]:
    """Run the benchmark on Ray and return the summary (with agreement and per-node figures)."""
    observer = observer or QuietObserver()
    if cfg.faults and cfg.faults * 3 >= cfg.nodes:
        log.warning("faults=%d of %d nodes: no batch can reach quorum", cfg.faults, cfg.nodes)
    connected = connect(cfg.address, cfg.num_cpus)
    try:
        nodes = alive_nodes()
        placement = plan_placement(nodes, cfg.nodes, cfg.workers)
        observer.note(f"Ray cluster: {len(nodes)} node(s); {_describe_homes(placement)}")
        if placement.note:
            observer.note(f"note: {placement.note}")
        committee = RayCommittee(
            cfg.nodes,
            cfg.workers,
            cfg.params,
            cfg.faults,
            store_root=str(cfg.store_dir) if cfg.store_dir else None,
            placement=placement,
        )
        try:
            return _run(cfg, committee, observer)
        except BaseException:
            committee.abort()
            raise
    finally:
        if connected:
            ray.shutdown()


def write_ray_targets(committee: RayCommittee, path: Path) -> None:
    """Prometheus file-SD targets for every running worker (rewritten after restarts)."""
    write_targets(
        path,
        [
            MetricsTarget(s.info["metrics"], short_name(s.authority), s.worker_id)
            for s in committee.workers
            if s.actor is not None and s.info.get("metrics")
        ],
    )


def _run(cfg: RayRunConfig, committee: RayCommittee, observer: RunObserver) -> dict[str, Any]:
    committee.deploy(cfg.startup_timeout)
    if cfg.targets_file is not None:
        write_ray_targets(committee, cfg.targets_file)
    if cfg.on_ready is not None:
        cfg.on_ready()
    observer.note(
        f"{len(committee.live_workers)} worker(s) listening, discovery complete over "
        f"{cfg.params.transport}"
    )
    load = RayLoad(committee, cfg.startup_timeout)
    try:
        rate = per_client_rate(cfg.rate, cfg.nodes, cfg.workers)
        observer.load_started(cfg.duration)
        try:
            clients = load.run(rate, cfg.tx_size, cfg.duration, observer.load_tick)
        finally:
            observer.load_done()
    finally:
        load.stop()
    drained = committee.drain(cfg.drain_timeout)
    time.sleep(cfg.linger)  # let a scraper take its last sample
    workers, collectors = committee.collect()
    stopped = committee.stop(remove_stores=cfg.store_dir is None)
    if not all(s["store_closed"] for s in stopped):
        log.warning("some worker did not stop cleanly: %s", stopped)
    homes = {
        a.name: {"ray_node_id": a.node.node_id, "ray_node_ip": a.node.ip}
        for a in committee.authorities
    }
    return build_summary(
        cfg.describe(), workers, clients, collectors, homes, drained, committee.placement.note
    )


def _describe_homes(placement: Placement) -> str:
    distinct = len({n.node_id for n in placement.homes})
    return f"{len(placement.homes)} authorities on {distinct} distinct node(s)"
