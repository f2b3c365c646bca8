"""The load on Ray: one client per live worker, all of a node's in one load actor there,
all started together."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import RayActorError

from cluster.ray.committee import RayCommittee, WorkerSlot, get_within
from cluster.ray.load_actor import LoadActor
from cluster.ray.placement import pinned

log = logging.getLogger(__name__)


class RayLoad:
    def __init__(self, committee: RayCommittee, timeout: float = 60.0) -> None:
        self.committee = committee
        self.slots = committee.live_workers
        #: node id -> the workers whose clients run there
        self.by_node: dict[str, list[WorkerSlot]] = {}
        for slot in self.slots:
            self.by_node.setdefault(slot.node.node_id, []).append(slot)
        self.actors = {
            node_id: ray.remote(LoadActor)
            .options(num_cpus=0, scheduling_strategy=pinned(slots[0].node))
            .remote()
            for node_id, slots in self.by_node.items()
        }
        # Every client process is up before any sends: the load starts together.
        self.pids = get_within(
            [a.ready.remote() for a in self.actors.values()], timeout, "starting the clients"
        )
        self._refs: dict[str, Any] = {}
        self._pending: list[Any] = []

    def start(self, rate: int, tx_size: int, duration: float) -> None:
        """Every client sends `rate` tx/s for `duration` s."""
        self._refs = {
            node_id: self.actors[node_id].run.remote(
                [s.info["transactions"] for s in slots], rate, tx_size, duration
            )
            for node_id, slots in self.by_node.items()
        }
        self._pending = list(self._refs.values())

    def wait(self, timeout: float) -> list[dict[str, Any]] | None:
        """The clients' reports once all are done, or None after `timeout` s.

        Clients whose machine crashed (a lab machine crash) have no report: left out.
        """
        if self._pending:
            _, self._pending = ray.wait(
                self._pending, num_returns=len(self._pending), timeout=timeout
            )
        if self._pending:
            return None
        reports = []
        for node_id, ref in self._refs.items():
            try:
                reports += ray.get(ref)
            except RayActorError:
                labels = ", ".join(s.label for s in self.by_node[node_id])
                log.warning("the load clients of %s died with their machine", labels)
        return reports

    def run(self, rate: int, tx_size: int, duration: float) -> list[dict[str, Any]]:
        """`start`, then the reports (what tests use; the experiment flow waits itself)."""
        self.start(rate, tx_size, duration)
        while (reports := self.wait(1.0)) is None:
            pass
        return reports

    def stop(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors = {}
