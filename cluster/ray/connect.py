"""Connecting the driver to Ray: an embedded local instance, or an existing cluster.

The embedded instance is held to loopback (cluster/ray/loopback.py), as is every port the
testbed opens on one machine; a cluster is protected as docs/ray.md says.

Joining a cluster ships this package's code through the runtime environment, so the
cluster runs the driver's version (its machines only need the dependencies, which
ray-cluster.yaml installs). Ray waits minutes on an address nobody answers, so the
address is checked first and a missing cluster fails at once with a clear error.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

import ray

import cluster
import faults
import metrics
import primary
import worker
from cluster.ray.loopback import single_machine_mode, warn_unless_loopback

log = logging.getLogger(__name__)
#: Packages the actors import; shipped to a joined cluster.
CODE: tuple[ModuleType, ...] = (cluster, faults, worker, primary, metrics)
CHECK_TIMEOUT = 5.0
#: Ray Client's server on the head starts a process per client, which can fail on a loaded
#: machine ("Starting Ray client server failed"): a join through ray:// is tried again.
CLIENT_ATTEMPTS = 3
#: Ray runs its workers at niceness 15; a benchmark's workers must not yield the CPU to
#: everything else on the machine (clusters: `RAY_worker_niceness=0 ray start ...`).
SYSTEM_CONFIG = {"worker_niceness": 0}


class RayUnavailable(ConnectionError):
    """No Ray cluster answers at the address given."""


def code_runtime_env() -> dict[str, Any]:
    """The packages by directory (Ray Client cannot pickle module objects)."""
    paths = [str(Path(m.__file__).parent) for m in CODE if m.__file__]
    return {"py_modules": paths, "excludes": ["__pycache__", "*.pyc"]}


def resolve(address: str) -> str:
    """'auto' -> the host:port of the cluster Ray would join (RAY_ADDRESS, or the latest)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # private API moved: let ray.init resolve it
        return address
    try:
        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError as exc:
        raise RayUnavailable(
            f"no running Ray cluster found for --address {address}: start one with "
            "`ray start --head` (or `ray up ray-cluster.yaml`), set RAY_ADDRESS, or omit "
            "--address to run on an embedded local Ray"
        ) from exc
    if resolved is None:
        raise RayUnavailable(f"--address {address} does not name a cluster to join")
    return resolved


def check_reachable(address: str, timeout: float = CHECK_TIMEOUT) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--address {address!r} is not host:port or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailable(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}): is `ray start` "
            "running there?"
        ) from exc


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect, unless Ray already is; True if this call connected (so shut it down after)."""
    if ray.is_initialized():
        return False
    if address is None:
        with single_machine_mode():  # every server of the embedded Ray on loopback
            ray.init(
                address="local",  # a new instance, whatever RAY_ADDRESS says
                num_cpus=num_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                _system_config=SYSTEM_CONFIG,
            )
        warn_unless_loopback()
        return True
    target = resolve(address) if address == "auto" else address
    if not target.startswith("ray://"):
        check_reachable(target)
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=target, runtime_env=code_runtime_env(), logging_level=logging.WARNING)
            return True
        except (ConnectionError, RuntimeError) as exc:
            # A failed init can leave a half-made (client) connection behind: drop it, so
            # neither a retry nor a later ray.init in this process inherits it.
            ray.shutdown()
            if attempt == CLIENT_ATTEMPTS or not target.startswith("ray://"):
                raise RayUnavailable(f"could not join the Ray cluster at {target}: {exc}") from exc
            log.warning("joining %s failed (%s); trying again", target, exc)
    raise AssertionError("unreachable")
