"""The load: one client actor per live worker, all started together, watched while running.

The rate is split as in the original harness: every client sends `ceil(rate / (N * W))`
tx/s, counting the workers of faulty authorities too (they just get no client).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import ray

from cluster.ray.client_actor import LoadClientActor
from cluster.ray.committee import RayCommittee, get_within
from cluster.ray.placement import pinned

#: Called about once a second while the load runs: (elapsed s, live totals or None).
OnTick = Callable[[float, dict[str, int] | None], None]


def per_client_rate(rate: int, nodes: int, workers: int) -> int:
    return math.ceil(rate / (nodes * workers))


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
        self.pids = get_within(
            [a.ready.remote() for a in self.actors], timeout, "starting the clients"
        )

    def run(
        self, rate: int, tx_size: int, duration: float, on_tick: OnTick | None = None
    ) -> list[dict[str, Any]]:
        """Every client sends `rate` tx/s for `duration` s; returns their reports."""
        refs = [
            actor.run.remote(slot.info["transactions"], rate, tx_size, duration)
            for slot, actor in zip(self.slots, self.actors, strict=True)
        ]
        start = time.monotonic()
        pending = refs
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            if on_tick is not None and pending:
                try:
                    live = self.committee.progress(timeout=2.0)
                except TimeoutError:
                    live = None  # a busy worker answers late: skip this tick
                on_tick(time.monotonic() - start, live)
        return ray.get(refs)

    def stop(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
