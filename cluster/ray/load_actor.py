"""The load clients of one Ray node, as trio tasks of one actor process.

One client per worker, as the original harness (each sends `ceil(rate / (N * W))` tx/s),
but one process per node for all of them, as the local backend runs all its clients on
one thread of the driver: a process of its own keeps the clients' CPU off the workers'
event loops, sitting on the workers' node keeps their traffic off the network, and a
crash of an authority's process leaves its client sending (and redialing), as a real
client would.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from cluster.load_client import run_load_client
from cluster.ray.process import normal_priority


class LoadActor:
    def __init__(self) -> None:
        logging.basicConfig(level=logging.WARNING)
        normal_priority()

    def ready(self) -> int:
        """Answered once the process is up, so the load starts together, not staggered."""
        return os.getpid()

    def run(
        self, targets: list[str], rate: int, tx_size: int, duration: float
    ) -> list[dict[str, Any]]:
        """One client per target address for `duration` s; their reports, in order."""
        reports: list[dict[str, Any]] = [{} for _ in targets]

        async def one(i: int, address: str) -> None:
            reports[i] = (await run_load_client(address, rate, tx_size, duration)).to_json()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for i, address in enumerate(targets):
                    nursery.start_soon(one, i, address)

        trio.run(main)
        return reports
