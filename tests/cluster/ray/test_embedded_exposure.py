"""What the embedded Ray of `narwhal-testbed run` exposes to the network.

Ray 2.60 cannot be held to loopback (its gRPC servers bind every interface, and it turns
127.0.0.1 into the routable address), so the guard is its token authentication: every
non-loopback listener of the embedded Ray's processes must refuse a call without the token,
except the autoscaler monitor's read-only Prometheus endpoint.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import grpc
import psutil
import pytest
import ray

from cluster.ray.connect import connect

pytestmark = pytest.mark.slow

#: one method each of the GCS, the raylet, a core worker and the object manager
METHODS = (
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    "/ray.rpc.NodeManagerService/GetNodeStats",
    "/ray.rpc.CoreWorkerService/NumPendingTasks",
    "/ray.rpc.ObjectManagerService/Push",
)


@ray.remote(num_cpus=0)
def _pid() -> int:
    return os.getpid()


@pytest.fixture
def embedded() -> Iterator[str]:
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        pytest.skip("RAY_AUTH_MODE=disabled turns Ray's token authentication off")
    assert connect(None, num_cpus=2)
    try:
        ray.get(_pid.remote())  # a worker process is up too
        yield ray._private.worker._global_node.get_session_dir_path()
    finally:
        ray.shutdown()


def listeners(session: str) -> list[tuple[str, str, int]]:
    """(command line, address, port) of every listening TCP socket of this Ray session."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if session not in cmdline and proc.pid != os.getpid():
            continue
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        found += [(cmdline, c.laddr.ip, c.laddr.port) for c in conns if c.status == "LISTEN"]
    return found


def refuses_without_token(ip: str, port: int) -> bool:
    with grpc.insecure_channel(f"{ip}:{port}") as channel:
        for method in METHODS:
            call = channel.unary_unary(
                method, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            try:
                call(b"", timeout=5)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    return True
                continue
            return False  # answered without a token
    return False


def test_every_reachable_port_of_the_embedded_ray_needs_its_token(embedded: str) -> None:
    node_ip = ray.nodes()[0]["NodeManagerAddress"]
    found = listeners(embedded)
    assert found, "no listening socket found for the embedded Ray"
    open_ports = []
    for cmdline, ip, port in found:
        if ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback:
            continue
        if "autoscaler/_private/monitor.py" in cmdline:
            continue  # read-only Prometheus metrics of the autoscaler (no control)
        if not refuses_without_token(node_ip, port):
            open_ports.append((ip, port, cmdline[:120]))
    assert not open_ports, f"reachable without Ray's token: {open_ports}"
