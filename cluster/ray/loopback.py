"""Holding the embedded Ray to loopback.

Ray binds the servers of a node (GCS, raylet and object manager, every worker's gRPC
server, the runtime-env and dashboard agents, the autoscaler monitor's metrics) to loopback
when the node's IP is 127.0.0.1, and to every interface otherwise. ray.init turns
`_node_ip_address="127.0.0.1"` into the routable address, except in Ray's single-machine
mode (its default on macOS and Windows; `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), in which the
node's IP is 127.0.0.1. The mode's switch is read when Ray is imported, so it is set for the
start of the embedded Ray only: a later join of a real cluster from the same process must
still see the machine's routable address.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import ray

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


@contextmanager
def single_machine_mode() -> Iterator[None]:
    """Ray's single-machine mode while the block runs (a no-op if this Ray lacks the switch:
    warn_unless_loopback then says what came of it)."""
    try:
        from ray._private import ray_constants
    except ImportError:
        ray_constants = None
    if ray_constants is None or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def warn_unless_loopback() -> None:
    """After the embedded Ray started: say so if it is not held to loopback."""
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        log.warning(
            "the embedded Ray runs on %s, not %s: it listens on every interface, and only "
            "Ray's token authentication (RAY_AUTH_MODE) keeps others from running code in it",
            node_ip,
            LOOPBACK,
        )
