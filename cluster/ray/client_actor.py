"""A load client in its own actor, next to the worker it feeds.

One client per worker, as the original harness: each sends `ceil(rate / workers)`
tx/s. A process of its own keeps the clients' CPU off the workers' event loops, and
sitting on the worker's node keeps the client's traffic off the network.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from cluster.load_client import run_load_client
from cluster.ray.process import normal_priority


class LoadClientActor:
    def __init__(self) -> None:
        logging.basicConfig(level=logging.WARNING)
        normal_priority()

    def ready(self) -> int:
        """Answered once the process is up, so the load starts together, not staggered."""
        return os.getpid()

    def run(self, address: str, rate: int, tx_size: int, duration: float) -> dict[str, Any]:
        """Send for `duration` s; returns the client report (sent, missed bursts, samples)."""
        report = trio.run(run_load_client, address, rate, tx_size, duration)
        return report.to_json()
