"""The load on Ray: one client actor per live worker, on its node, all started together."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import RayActorError

from cluster.ray.client_actor import LoadClientActor
from cluster.ray.committee import RayCommittee, get_within
from cluster.ray.placement import pinned

log = logging.getLogger(__name__)


class RayLoad:
    def __init__(self, committee: RayCommittee, timeout: float = 60.0) -> None:
        self.committee = committee
        self.slots = committee.live_workers
        self.actors = [
            ray.remote(LoadClientActor)
            .options(num_cpus=0, scheduling_strategy=pinned(slot.node))
            .remote()
            for slot in self.slots
        ]
        # Every client process is up before any sends: the load starts together.
        self.pids = get_within(
            [a.ready.remote() for a in self.actors], timeout, "starting the clients"
        )
        self._refs: list[Any] = []
        self._pending: list[Any] = []

    def start(self, rate: int, tx_size: int, duration: float) -> None:
        """Every client sends `rate` tx/s for `duration` s."""
        self._refs = [
            actor.run.remote(slot.info["transactions"], rate, tx_size, duration)
            for slot, actor in zip(self.slots, self.actors, strict=True)
        ]
        self._pending = list(self._refs)

    def wait(self, timeout: float) -> list[dict[str, Any]] | None:
        """The clients' reports once all are done, or None after `timeout` s.

        A client whose machine crashed (a lab machine crash) has no report: it is left out.
        """
        if self._pending:
            _, self._pending = ray.wait(
                self._pending, num_returns=len(self._pending), timeout=timeout
            )
        if self._pending:
            return None
        reports = []
        for slot, ref in zip(self.slots, self._refs, strict=True):
            try:
                reports.append(ray.get(ref))
            except RayActorError:
                log.warning("the load client of %s died with its machine", slot.label)
        return reports

    def run(self, rate: int, tx_size: int, duration: float) -> list[dict[str, Any]]:
        """`start`, then the reports (what tests use; the experiment flow waits itself)."""
        self.start(rate, tx_size, duration)
        while (reports := self.wait(1.0)) is None:
            pass
        return reports

    def stop(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
