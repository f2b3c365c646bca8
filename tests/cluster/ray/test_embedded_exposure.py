"""What the embedded Ray of `narwhal-testbed run` exposes to the network: nothing.

Every listening TCP socket of the embedded Ray's processes (the driver's own core worker,
the GCS, the raylet, the autoscaler monitor, the agents, the worker processes: the driver
and all its descendants) is bound to a loopback address. Ray renames its workers'
processes (`ray::IDLE`, `ray::RuntimeEnvAgent`), so they are found as the driver's
descendants, not by the session directory on their command lines.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import psutil
import pytest
import ray

from cluster.ray.connect import connect

pytestmark = pytest.mark.slow


@ray.remote(num_cpus=0)
class _Probe:
    def pid(self) -> int:
        return os.getpid()


@pytest.fixture
def embedded() -> Iterator[int]:
    """The embedded Ray, with one actor up; yields the actor's pid."""
    assert connect(None, num_cpus=2)
    try:
        probe = _Probe.remote()
        yield ray.get(probe.pid.remote())
    finally:
        ray.shutdown()


def listeners() -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every listening TCP socket of this process
    and its descendants."""
    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            name, conns = proc.name(), proc.net_connections(kind="tcp")
        except psutil.Error:  # a process that ended meanwhile
            continue
        found += [(proc.pid, name, c.laddr.ip, c.laddr.port) for c in conns if c.status == "LISTEN"]
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # an IPv6 socket bound to ::ffff:127.0.0.1
    return address.is_loopback


def test_every_listener_of_the_embedded_ray_is_on_loopback(embedded: int) -> None:
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    found = listeners()
    names = {name for _, name, _, _ in found}
    # The check must see what it speaks for: the GCS, the raylet and a worker process.
    assert {"gcs_server", "raylet"} <= names, f"Ray's own servers not found: {found}"
    assert embedded in {pid for pid, *_ in found}, "the actor's gRPC server not found"
    exposed = [entry for entry in found if not is_loopback(entry[2])]
    assert not exposed, f"listening beyond loopback: {exposed}"
