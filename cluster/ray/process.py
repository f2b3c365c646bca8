"""What every testbed actor does about its process: CPU priority, and saying where it runs."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

log = logging.getLogger(__name__)


def normal_priority() -> None:
    """Undo Ray's worker niceness (15) where allowed, so the benchmark gets its share of CPU.

    Clusters started with `RAY_worker_niceness=0` (see ray-cluster.yaml) need no undoing.
    """
    if os.getpriority(os.PRIO_PROCESS, 0) > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except PermissionError:
            log.warning("running at niceness %d", os.getpriority(os.PRIO_PROCESS, 0))


def location(host: str) -> dict[str, Any]:
    """Where this actor runs: the Ray node, its IP, the process, and the bind host."""
    return {
        "ray_node_id": ray.get_runtime_context().get_node_id(),
        "ray_node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "host": host,
    }
